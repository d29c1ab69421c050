"""Executor throughput, timeout precision and leaks, against a ReFT-style pebble pool.

Corpus: ``benchmarks/pot_corpus.py`` (GSM8K-style programs, 1% never finish). Rows:

* ``pebble ReFT-style``: ReFT's ``run_python_code``: ``pebble.ProcessPool(max_workers=8)``
  forked from this process (sympy loaded), RLIMIT_AS initializer, ``schedule(..., timeout=T)``,
  results unpickled here; rebuilt per call as ReFT does. No isolation between programs.
* ``PotExecutor fork`` / ``PotExecutor worker``: this library, 2 zygotes, math+sympy preloaded.

Reported: programs/s (wall), CPU-ms per program (every process involved), p50/p99 overshoot
of the wall-clock deadline on timed-out programs, processes left behind, and whether each
executor's statuses/values agree with an in-process serial run on the programs that finish.
``CI=true`` runs a small size (the CI smoke run); by hand the full size runs.
``pytest benchmarks/test_bench_executor.py -s`` prints the table.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Table
from pot_corpus import make_corpus

from rlkd_fast import pot

pebble = pytest.importorskip("pebble")
executor = pytest.importorskip("rlkd_fast.executor")

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
N = 400 if CI else 4000
TIMEOUT_S = 1.0
PEBBLE_WORKERS = 8  # as ReFT


def _reft_style_run(code: str):
    """What a ReFT pebble worker does per program (exec with math/sympy, eval solution())."""
    import math

    import sympy

    glb, loc = {"math": math, "sympy": sympy}, {}
    exec(code, glb, loc)
    try:
        return eval("solution()", glb, loc)
    except Exception:
        return None


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_pebble(programs: list[str], timeout_s: float) -> list[float | None]:
    codes = [pot.reft_program(p) for p in programs]
    out = []
    with pebble.ProcessPool(max_workers=PEBBLE_WORKERS, initializer=_limit_memory,
                            initargs=(12 * 2**30,)) as pool:
        futures = [pool.schedule(_reft_style_run, args=[c], timeout=timeout_s) for c in codes]
        for f in futures:
            try:
                res = f.result()
            except Exception:
                res = None
            try:
                out.append(float(res))
            except Exception:
                out.append(None)
    return out


def _cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _descendants(zombies: bool = False) -> set[int]:
    """Live (or, with zombies=True, dead unreaped) processes whose parent is this process;
    with a subreaper, orphans land here too."""
    me, out = os.getpid(), set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == me and (fields[0] == "Z") == zombies:
                    out.add(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _leaked(before: set[int], wait_s: float = 3.0) -> set[int]:
    """Processes started during the run that are still alive after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        for pid in _descendants(zombies=True) - before:  # orphans that died here
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        leaked = _descendants() - before
        if not leaked or time.monotonic() > deadline:
            return leaked
        time.sleep(0.05)


def _describe(pids: set[int]) -> dict[int, str]:
    out = {}
    for p in pids:
        try:
            out[p] = Path(f"/proc/{p}/stat").read_text()[:60]
        except OSError:
            out[p] = "gone"
    return out


def _serial_reference(programs: list[str]) -> list[float | None]:
    """In-process answers for programs that finish quickly (the looping ones are skipped)."""
    out = []
    for p in programs:
        if "while count > 0" in p:
            out.append("timeout")
            continue
        status, value, _, _ = pot.run_program(pot.reft_program(p).encode(), pot.REFT)
        out.append(value if status == pot.OK else None)
    return out


def _agreement(got: list, ref: list) -> float:
    same = sum((r == "timeout" and g == "timeout") or (r != "timeout" and g == r)
               for g, r in zip(got, ref))
    return same / len(ref)


def _bench_ours(programs, isolation: str, ref, table: Table, label: str = "") -> float:
    with executor.PotExecutor(workers=2, timeout_s=TIMEOUT_S, isolation=isolation,
                              conventions="reft") as ex:
        ex.run(programs[:20])  # warm
        pids = ex.zygote_pids()
        cpu0 = sum(_cpu_seconds(p) for p in pids) + _self_cpu()
        t0 = time.perf_counter()
        results = ex.run(programs)
        wall = time.perf_counter() - t0
        cpu = sum(_cpu_seconds(p) for p in pids) + _self_cpu() - cpu0
        respawns = ex.respawns
    over = [r.elapsed_s - TIMEOUT_S for r in results if r.status == "timeout"]
    got = ["timeout" if r.status == "timeout" else r.value for r in results]
    rate = len(programs) / wall
    table.add(op="pot-exec", size=f"n={len(programs)} T={TIMEOUT_S}s",
              impl=f"ours {isolation}{label}",
              ms=wall * 1000 / len(programs),
              note=f"{rate:.0f} prog/s; cpu {cpu * 1000 / len(programs):.2f} ms/prog; "
                   f"overshoot p50 {_pct(over, 50)} p99 {_pct(over, 99)}; "
                   f"agree {_agreement(got, ref):.1%}; respawns {respawns}",
              extra={"programs_per_s": rate, "cpu_ms_per_program": cpu * 1000 / len(programs),
                     "overshoot_ms": [o * 1000 for o in over]})
    return rate


def _pct(xs: list[float], q: int) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return f"{xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))] * 1000:.0f}ms"


@pytest.fixture
def subreaper():
    """Orphans of anything started here reparent to this process, so leaks are visible."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    yield
    libc.prctl(36, 0, 0, 0, 0)


@pytest.mark.slow
def test_executor_throughput(subreaper):
    programs = make_corpus(N, seed=1, timeout_frac=0.01)
    ref = _serial_reference(programs)
    before = _descendants()
    table = Table("executor", gpu_benchmark=False)

    t0 = time.perf_counter()
    cpu0 = _self_cpu()
    peb = run_pebble(programs, TIMEOUT_S)
    wall = time.perf_counter() - t0
    cpu = _self_cpu() - cpu0
    pebble_rate = len(programs) / wall
    got = ["timeout" if (v is None and r == "timeout") else v for v, r in zip(peb, ref)]
    table.add(op="pot-exec", size=f"n={len(programs)} T={TIMEOUT_S}s", impl="pebble ReFT-style",
              ms=wall * 1000 / len(programs),
              note=f"{pebble_rate:.0f} prog/s; cpu {cpu * 1000 / len(programs):.2f} ms/prog; "
                   f"agree {_agreement(got, ref):.1%}",
              extra={"programs_per_s": pebble_rate})
    fork_rate = _bench_ours(programs, "fork", ref, table)
    worker_rate = _bench_ours(programs, "worker", ref, table)
    finite = [(p, r) for p, r in zip(programs, ref) if r != "timeout"]
    _bench_ours([p for p, _ in finite], "fork", [r for _, r in finite], table, " no-loops")
    leaked = _leaked(before)
    table.add(op="leaks", size="after all runs", impl="all", ms=None,
              note=f"{len(leaked)} processes left", extra={"leaked": sorted(leaked)})
    table.report(baseline_impl="pebble ReFT-style")
    print(f"\nfork {fork_rate:.0f}/s, worker {worker_rate:.0f}/s "
          f"({worker_rate / pebble_rate:.2f}x pebble {pebble_rate:.0f}/s)", file=sys.stderr)

    assert not leaked, f"processes left behind: {_describe(leaked)}"
    for row in table.rows[1:3]:
        over = row.extra["overshoot_ms"]
        assert len(over) == round(N * 0.01), "every looping program must time out"
        # The target (p99 <= 100 ms) is for a quiet machine; CI shares its cores, so only a
        # gross regression fails here.
        assert statistics.median(over) < 500, "deadline overshoot far beyond the deadline"
