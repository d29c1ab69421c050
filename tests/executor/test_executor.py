"""PotExecutor: answers equal an in-process serial run; API (threads, submit, context manager,
conventions); worker-mode replacement; zygote death -> infra_error, then recovery."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from pot_corpus import make_corpus

from rlkd_fast import pot
from rlkd_fast.executor import ExecResult, PotExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def serial(programs: list[str], conventions: str = "reft") -> list[tuple[str, float | None]]:
    """The reference: the same programs run one by one in this process, no sandbox."""
    conv = pot.CONVENTIONS[conventions]
    out = []
    for p in programs:
        text = pot.reft_program(p) if conventions == "reft" else p
        status, value, _, _ = pot.run_program(text.encode(), conv)
        out.append(({pot.OK: "ok", pot.ERROR: "error", pot.NONNUMERIC: "nonnumeric"}[status],
                     value))
    return out


def zygote_children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


@pytest.fixture(scope="module")
def fork_ex():
    with PotExecutor(workers=2, timeout_s=1.0, isolation="fork", conventions="reft") as ex:
        yield ex


@pytest.fixture(scope="module")
def worker_ex():
    with PotExecutor(workers=1, timeout_s=1.0, isolation="worker", conventions="plain",
                     slots=1) as ex:
        yield ex


@pytest.mark.parametrize("isolation", ["fork", "worker"])
def test_ordinary_programs_match_serial_run(isolation, fork_ex):
    programs = make_corpus(150, seed=7, timeout_frac=0.0)
    if isolation == "fork":
        got = fork_ex.run(programs, timeout_s=5.0)
    else:
        with PotExecutor(workers=2, timeout_s=5.0, isolation="worker",
                         conventions="reft") as ex:
            got = ex.run(programs)
    want = serial(programs)
    assert [(r.status, r.value) for r in got] == want
    assert {s for s, _ in want} == {"ok", "error", "nonnumeric"}  # the corpus mixes all three
    for r in got:
        assert isinstance(r, ExecResult)
        assert (r.error == "") == (r.status == "ok")
        assert r.elapsed_s >= 0


def test_plain_and_reft_conventions(fork_ex):
    reft_prog = ('def solution():\n    """Q"""\n    a = sympy.Rational(3, 4)\n    return float(a)\n'
                 '\nprint("trailing text after a blank line is cut")\ndef broken(:\n')
    assert fork_ex.run([reft_prog])[0] == fork_ex.run([reft_prog])[0]
    res = fork_ex.run([reft_prog])[0]
    assert (res.status, res.value) == ("ok", 0.75)
    with PotExecutor(workers=1, timeout_s=1.0, conventions="plain", preload=("math",)) as ex:
        plain = ex.run([reft_prog, "import math\ndef solution():\n    return math.pi\n",
                        "answer = 4\n"])
    assert plain[0].status == "error" and "SyntaxError" in plain[0].error
    assert (plain[1].status, plain[1].value) == ("ok", math.pi)
    assert plain[2].status == "error" and "solution()" in plain[2].error
    # ReFT's rewrite: sys.exit becomes print, the cut happens at the first blank line.
    text = pot.reft_program("def solution():\n    sys.exit(1)\n    return 2\n\nx = 1/0\n")
    assert text == "import math\nimport sympy\ndef solution():\n    print(1)\n    return 2"


def test_many_threads_and_submit(fork_ex):
    programs = [f"def solution():\n    return {i} * 3\n" for i in range(60)]
    out: dict[int, list[ExecResult]] = {}

    def work(k: int) -> None:
        out[k] = fork_ex.run(programs[k::4])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    future = fork_ex.submit(programs, timeout_s=2.0)
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in range(4):
        assert [r.value for r in out[k]] == [3.0 * i for i in range(k, 60, 4)]
    assert [r.value for r in future.result(60)] == [3.0 * i for i in range(60)]
    assert fork_ex.run([]) == []


def test_bad_arguments_and_closed_executor():
    with pytest.raises(ValueError):
        PotExecutor(isolation="thread")
    with pytest.raises(ValueError):
        PotExecutor(conventions="python")
    with pytest.raises(ValueError):
        PotExecutor(timeout_s=0)
    ex = PotExecutor(workers=1, preload=())
    assert ex.run(["def solution():\n    return 1\n"])[0].value == 1.0
    with pytest.raises(TypeError):
        ex.run([b"def solution(): return 1"])
    ex.close()
    ex.close()
    with pytest.raises(RuntimeError):
        ex.run(["def solution():\n    return 1\n"])
    with pytest.raises(RuntimeError):
        ex.submit(["def solution():\n    return 1\n"])


def test_close_ends_submitted_batches_at_once():
    """close() with submit()ted batches running or queued in the pool ends them at once, as it
    does a run() in another thread: their unfinished programs get infra_error."""
    slow = ["import time\ndef solution():\n    time.sleep(0.5)\n    return 1\n"] * 40
    ex = PotExecutor(workers=1, timeout_s=5.0, preload=("math",), slots=2)  # ~10 s a batch
    running = ex.submit(slow)
    queued = [ex.submit(slow[:2]) for _ in range(5)]  # the pool runs 4 batches at a time
    out: dict[str, list[ExecResult]] = {}
    thread = threading.Thread(target=lambda: out.setdefault("run", ex.run(slow)))
    thread.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    ex.close()
    assert time.monotonic() - t0 < 3.0
    batches = [running.result(5), *(f.result(5) for f in queued)]
    thread.join(5)
    batches.append(out["run"])
    assert [len(b) for b in batches] == [40, 2, 2, 2, 2, 2, 40]
    results = [r for b in batches for r in b]
    assert {r.status for r in results} <= {"ok", "infra_error"}
    ended = [r for r in results if r.status == "infra_error"]
    assert len(ended) >= 80 and {r.error for r in ended} == {"executor closed"}


HOLD_EXECUTOR = ("import time\nfrom rlkd_fast.executor import PotExecutor\n"
                 "ex = PotExecutor(workers=2, preload=())\n"
                 "print(*ex.zygote_pids(), flush=True)\ntime.sleep(300)\n")


def scratch_dirs(pid: int) -> list[Path]:
    return sorted(Path("/tmp").glob(f"rlkd-exec-{pid}-*"))


def process_start(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_scratch_dirs_of_a_killed_owner_are_removed_at_the_next_start(tmp_path):
    """SIGKILL leaves a process no chance to remove its zygotes' scratch directories; the next
    executor to start removes them, and only those whose owner is gone."""
    owners = [subprocess.Popen([sys.executable, "-c", HOLD_EXECUTOR], stdout=subprocess.PIPE,
                               text=True) for _ in range(2)]
    victim, survivor = owners
    try:
        zygotes = [int(p) for p in victim.stdout.readline().split()]
        survivor.stdout.readline()
        doomed, kept = scratch_dirs(victim.pid), scratch_dirs(survivor.pid)
        assert len(doomed) == len(kept) == 2 and all(d.is_dir() for d in doomed + kept)
        victim.kill()
        victim.wait()
        for _ in range(500):  # the zygotes die with their owner (PDEATHSIG)
            if not any(Path(f"/proc/{z}").exists() for z in zygotes):
                break
            time.sleep(0.01)
        assert all(d.is_dir() for d in doomed)  # nothing removed them so far
        me = os.getpid()
        reused = Path(f"/tmp/rlkd-exec-{me}-{process_start(me) - 1}-abcdef")  # pid reused
        mine = Path(f"/tmp/rlkd-exec-{me}-{process_start(me)}-abcdef")  # alive
        unrelated = Path("/tmp/rlkd-exec-123456")  # another naming: not ours to judge
        for d in (reused, mine, unrelated):
            (d / "p1").mkdir(parents=True, exist_ok=True)
        try:
            with PotExecutor(workers=1, preload=()) as ex:
                assert ex.run(["def solution():\n    return 1\n"])[0].value == 1.0
            assert not any(d.exists() for d in doomed) and not reused.exists()
            assert all(d.is_dir() for d in kept) and mine.is_dir() and unrelated.is_dir()
        finally:
            for d in (reused, mine, unrelated):
                shutil.rmtree(d, ignore_errors=True)
    finally:
        for proc in owners:
            proc.kill()
            proc.wait()


def test_worker_replaced_after_state_change(worker_ex):
    pid0 = zygote_children(worker_ex.zygote_pids()[0])
    first = worker_ex.run(["def solution():\n    return 1\n"])[0]
    workers = zygote_children(worker_ex.zygote_pids()[0])
    assert first.value == 1.0 and len(workers) == 1 and (not pid0 or workers == pid0)
    # A clean program keeps the worker.
    worker_ex.run(["def solution():\n    return 2\n"])
    assert zygote_children(worker_ex.zygote_pids()[0]) == workers
    # Patching a preloaded module marks the worker dirty: the next program sees a fresh one.
    patch = "import math\ndef solution():\n    math.pi = 3\n    return math.pi\n"
    assert worker_ex.run([patch])[0].value == 3.0
    check = "import math\ndef solution():\n    return math.pi\n"
    assert worker_ex.run([check])[0].value == math.pi
    assert zygote_children(worker_ex.zygote_pids()[0]) != workers
    # So do a leftover thread, a file in the scratch dir and a new import.
    for prog in ("import threading, time\ndef solution():\n"
                 "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
                 "    return 5\n",
                 "def solution():\n    open('scratch.txt', 'w').write('x')\n    return 6\n",
                 "import builtins\ndef solution():\n"
                 "    builtins.len = lambda x: 0\n    return 7\n"):
        before = zygote_children(worker_ex.zygote_pids()[0])
        assert worker_ex.run([prog])[0].status == "ok"
        worker_ex.run([check])
        after = zygote_children(worker_ex.zygote_pids()[0])
        assert after != before
    assert worker_ex.run(["def solution():\n    return len([1, 2])\n"])[0].value == 2.0
    # A timeout kills the worker; the next program runs in a fresh one.
    assert worker_ex.run(["def solution():\n    while True: pass\n"])[0].status == "timeout"
    assert worker_ex.run([check])[0].value == math.pi


def test_zygote_killed_mid_batch_then_recovery():
    with PotExecutor(workers=2, timeout_s=5.0, slots=4, preload=("math",)) as ex:
        victim = ex.zygote_pids()[0]
        progs = ["import time\ndef solution():\n    time.sleep(0.6)\n    return 1\n"] * 8
        killer = threading.Timer(0.3, os.kill, args=(victim, signal.SIGKILL))
        killer.start()
        res = ex.run(progs)
        killer.join()
        statuses = [r.status for r in res]
        assert "infra_error" in statuses, statuses
        assert set(statuses) <= {"ok", "infra_error"}
        assert all("zygote" in r.error for r in res if r.status == "infra_error")
        again = ex.run(["def solution():\n    return 9\n"] * 6)
        assert [r.value for r in again] == [9.0] * 6
        assert ex.respawns >= 1 and victim not in ex.zygote_pids()
        assert all(p > 0 for p in ex.zygote_pids())


@pytest.mark.slow
def test_thousand_mixed_programs_under_load(fork_ex):
    """1,000 corpus programs (1% never finish) while other threads keep the executor busy."""
    programs = make_corpus(1000, seed=3, timeout_frac=0.01)
    want = serial([p for p in programs if "while count > 0" not in p])
    noise = [f"def solution():\n    return sum(range({i * 1000}))\n" for i in range(100)]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            fork_ex.run(noise[:20])

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        got = fork_ex.run(programs, timeout_s=3.0)  # finite programs must finish even under load
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    loops = [r for p, r in zip(programs, got) if "while count > 0" in p]
    assert len(loops) == 10 and all(r.status == "timeout" for r in loops)
    rest = [(r.status, r.value) for p, r in zip(programs, got) if "while count > 0" not in p]
    assert rest == want, [(g, w) for g, w in zip(rest, want) if g != w][:5]
    for _ in range(200):  # killed programs may take a moment to die
        if not any(zygote_children(z) for z in fork_ex.zygote_pids()):
            break
        time.sleep(0.01)
    for z in fork_ex.zygote_pids():
        assert zygote_children(z) == []


def test_a_forked_copy_refuses_and_leaves_the_parent_alone(fork_ex):
    """A fork of the trainer (a DataLoader worker) gets an error, and its exit harms nothing."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fork_ex.run(["def solution():\n    return 1\n"])
        except RuntimeError:
            code = 7
        fork_ex.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 7
    assert fork_ex.run(["def solution():\n    return 2\n"])[0].value == 2.0


def test_stop_and_continue_survive():
    """SIGSTOP/SIGCONT (job control, a freezer, a debugger attaching) make the kernel resume
    interrupted sleeps and polls through restart_syscall, which the filters must allow."""
    with PotExecutor(workers=1, timeout_s=5.0, preload=("math",)) as ex:
        z = ex.zygote_pids()[0]
        progs = ["import time\ndef solution():\n    time.sleep(0.4)\n    return 1\n"] * 2

        def poke() -> None:
            time.sleep(0.15)
            for pid in [z, *zygote_children(z)]:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.02)
                os.kill(pid, signal.SIGCONT)

        t = threading.Thread(target=poke)
        t.start()
        res = ex.run(progs)
        t.join()
        assert [(r.status, r.value) for r in res] == [("ok", 1.0)] * 2
        assert ex.respawns == 0 and ex.zygote_pids() == [z]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_runaway_is_stopped_while_others_wait_and_still_times_out():
    """Past its CPU allowance (1/20 of the deadline) a runaway is stopped while its zygote has
    other programs queued, and its deadline still holds; the others all finish."""
    loop = "def solution():\n    while True:\n        pass\n"
    short = [f"def solution():\n    return {i}\n" for i in range(1500)]
    with PotExecutor(workers=1, timeout_s=2.0, preload=("math",), slots=64) as ex:
        z = ex.zygote_pids()[0]
        future = ex.submit([loop, *short])
        seen = set()
        while not future.done():
            kids = zygote_children(z)
            if kids:
                seen.add(_state(kids[0]))  # the runaway is the oldest child
            time.sleep(0.005)
        res = future.result()
    assert res[0].status == "timeout" and 2.0 <= res[0].elapsed_s < 2.5
    assert [(r.status, r.value) for r in res[1:]] == [("ok", float(i)) for i in range(1500)]
    assert "T" in seen, seen  # stopped (T) at some point while short programs waited


def test_a_slow_program_alone_is_not_stopped():
    """Demotion alone costs a lone slow program nothing: with no other work it runs on."""
    slow = "def solution():\n    return sum(i % 7 for i in range(3_000_000))\n"
    t0 = time.process_time()
    want = sum(i % 7 for i in range(3_000_000))
    cpu = time.process_time() - t0
    # Deadline 5x its CPU time: the allowance (1/20 of it) is a quarter of what it needs.
    with PotExecutor(workers=1, timeout_s=max(1.0, 5 * cpu), preload=("math",)) as ex:
        res = ex.run([slow])[0]
    assert (res.status, res.value) == ("ok", float(want)), res
