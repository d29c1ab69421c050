"""The GPU check's one results table (markdown), from its parts and the benchmarks' JSON.

``benchmarks/gpu_check.sh`` records one line per part in ``parts.tsv`` (name, status,
seconds, detail) and points the benchmarks at one results folder; this script writes:

1. the machine: card, date, commit, Python, torch, triton, transformers versions;
2. one row per part: ran / failed / timed out / skipped (with why), seconds, what it measured;
3. every benchmark row whose note names a target, with its time and fraction of copy
   bandwidth, and the judge and decode tables' speed-ups;
4. the trainer run's summary (steps, seconds, the time split).

Cells never hold "|" (it would split a markdown cell).

    python benchmarks/gpu_report.py PARTS_TSV RESULTS_DIR RUN_DIR OUT_MD
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def versions() -> list[tuple[str, str]]:
    import torch

    rows = [("date (UTC)", time.strftime("%Y-%m-%d %H:%M", time.gmtime())),
            ("card", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"),
            ("commit", (_git("rev-parse", "--short", "HEAD") or "unknown (no git)")
             + (" (+ uncommitted changes)" if _git("status", "--porcelain") else "")),
            ("python", platform.python_version()), ("torch", torch.__version__)]
    for name in ("triton", "transformers", "liger_kernel"):
        try:
            module = __import__(name)
            rows.append((name, getattr(module, "__version__", "installed")))
        except ImportError:
            rows.append((name, "not installed"))
    return rows


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              check=False).stdout.strip()
    except OSError:
        return "unknown"


def part_rows(parts_tsv: Path) -> list[list[str]]:
    rows = []
    for line in parts_tsv.read_text().splitlines():
        name, status, seconds, detail = (line.split("\t") + ["", "", ""])[:4]
        rows.append([name, status, seconds, detail])
    return rows


def _ms(ms) -> str:
    if ms is None:
        return "n/a"
    return f"{ms * 1000:.1f} us" if ms < 1 else f"{ms:.2f} ms"


def bench_rows(results: Path) -> list[list[str]]:
    """Rows whose note names a target, and every row of the judge and decode tables."""
    rows = []
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for r in data.get("rows", []):
            wide = path.stem.startswith(("judge", "decode"))
            if not (wide or "target" in (r.get("note") or "")):
                continue
            frac = r.get("copy_fraction")
            extra = r.get("extra") or {}
            speed = [f"{k}={v:.2f}" for k, v in extra.items()
                     if k.startswith("speedup") and isinstance(v, (int, float))]
            rows.append([path.stem, r.get("size", ""), r.get("impl", ""), _ms(r.get("ms")),
                         f"{frac:.0%}" if frac else "-",
                         "; ".join([*speed, (r.get("note") or "").replace("|", "/")])])
    return rows


def run_rows(run_dir: Path) -> list[list[str]]:
    summary = run_dir / "summary.json"
    if not summary.exists():
        return []
    s = json.loads(summary.read_text())
    split = ", ".join(f"{k} {v:.1f} s" for k, v in s.get("time_split_seconds", {}).items())
    steps = max(1, s.get("steps", 0))
    wall = s.get("wall_seconds", 0)
    return [["steps", str(s.get("steps"))],
             ["wall seconds", f"{wall:.1f} ({wall / steps:.2f} per step)"],
             ["time split", split],
             ["held-out accuracy (random weights)",
              f"{s.get('initial_accuracy')} -> {s.get('final_accuracy')}"]]


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parts_tsv, results, run_dir, out = map(Path, argv)
    text = ["# GPU check results", "", table(["", ""], versions()), "",
            "## Parts", "", table(["part", "status", "seconds", "detail"],
                                  part_rows(parts_tsv)), ""]
    bench = bench_rows(results)
    text += ["## Benchmark rows with targets", "",
             table(["table", "size", "impl", "time", "of copy bw", "note"], bench)
             if bench else "no benchmark results (no benchmark ran)", ""]
    run = run_rows(run_dir)
    if run:
        text += ["## Trainer run (GRPO, random real-shaped models)", "", table(["", ""], run), ""]
    out.write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
