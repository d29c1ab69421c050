"""Shared benchmark plumbing: timing, copy bandwidth, peak memory, a results table.

On a GPU, times are medians of ``triton.testing.do_bench`` (CUDA events); bandwidth is compared
with a device-to-device copy measured in the same run. On CPU the benchmarks run a tiny smoke size
so they keep working; those timings say nothing about the kernels' speed and the table says so.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

RESULTS_DIR = Path(os.environ.get("RLKD_BENCH_DIR", Path(__file__).parent / "results"))


def on_gpu() -> bool:
    return torch.cuda.is_available()


def device() -> torch.device:
    return torch.device("cuda" if on_gpu() else "cpu")


def bench(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> float:
    """Median milliseconds of ``fn()``; CUDA events on a GPU, a wall clock on CPU."""
    if on_gpu():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                                             return_mode="median"))
    fn()  # warm-up (compilation, caches)
    times = []
    deadline = time.perf_counter() + rep_ms / 1000
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes per second of a device copy (bytes read + bytes written) of ``nbytes``."""
    if not on_gpu():
        nbytes = min(nbytes, 1 << 24)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device()).uniform_()
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms / 1000)


def peak_memory_mb(fn: Callable[[], object]) -> float | None:
    """Peak device memory allocated during one ``fn()`` above what was allocated before."""
    if not on_gpu():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


@dataclass
class Row:
    op: str
    size: str
    impl: str
    ms: float | None
    bytes_moved: int | None = None
    peak_mb: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


class Table:
    """Rows of one benchmark; printed with ratios to a named baseline and written as JSON+CSV."""

    def __init__(self, name: str, copy_bps: float | None = None, gpu_benchmark: bool = True):
        self.name = name
        self.copy_bps = copy_bps
        self.gpu_benchmark = gpu_benchmark  # False: a CPU benchmark, meaningful on the CPU
        self.rows: list[Row] = []

    def add(self, **kw) -> Row:
        row = Row(**kw)
        self.rows.append(row)
        return row

    def ratio(self, row: Row, baseline_impl: str) -> float | None:
        base = next((r for r in self.rows if r.op == row.op and r.size == row.size
                     and r.impl == baseline_impl and r.ms), None)
        return base.ms / row.ms if base and row.ms else None

    def copy_fraction(self, row: Row) -> float | None:
        if not (self.copy_bps and row.bytes_moved and row.ms):
            return None
        return row.bytes_moved / (row.ms / 1000) / self.copy_bps

    def render(self, baseline_impl: str) -> str:
        head = f"{'op':<18}{'size':<26}{'impl':<24}{'time':>11}{'vs ' + baseline_impl:>16}" \
               f"{'of copy bw':>12}{'peak MB':>10}  note"
        lines = [f"== {self.name} on {describe_device()} ==", head, "-" * len(head)]
        for r in self.rows:
            ratio = self.ratio(r, baseline_impl)
            frac = self.copy_fraction(r)
            lines.append(
                f"{r.op:<18}{r.size:<26}{r.impl:<24}"
                f"{_fmt_ms(r.ms):>11}{(f'{ratio:.2f}x' if ratio else '-'):>16}"
                f"{(f'{frac:.0%}' if frac else '-'):>12}"
                f"{(f'{r.peak_mb:.0f}' if r.peak_mb is not None else '-'):>10}  {r.note}"
            )
        if self.gpu_benchmark and not on_gpu():
            lines.append("NOTE: CPU smoke run at tiny sizes: the timings are not meaningful; "
                         "run `pytest benchmarks` on an H100/H200 for real numbers.")
        return "\n".join(lines)

    def save(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        meta = {"device": describe_device(), "torch": torch.__version__,
                "copy_GBps": self.copy_bps / 1e9 if self.copy_bps else None,
                "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        rows = [asdict(r) | {"copy_fraction": self.copy_fraction(r)} for r in self.rows]
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        with open(RESULTS_DIR / f"{self.name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["op"])
            writer.writeheader()
            writer.writerows(rows)
        return path

    def report(self, baseline_impl: str) -> str:
        text = self.render(baseline_impl)
        print("\n" + text, file=sys.stderr)
        self.save()
        return text


def describe_device() -> str:
    if on_gpu():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    return f"{ms * 1000:.1f} us" if ms < 1 else f"{ms:.2f} ms"
