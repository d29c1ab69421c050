"""Hostile programs, each with its expected status; after each one the host is unharmed and
nothing the program started is still running."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from rlkd_fast.executor import PotExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

SECRET = "rlkd-test-secret-7f3a"
HOST_PID = os.getpid()


def sol(body: str, head: str = "") -> str:
    """A program: optional top-level lines, then solution() with the indented body."""
    lines = "\n".join("    " + ln for ln in body.strip("\n").split("\n"))
    return f"{head}\ndef solution():\n{lines}\n"


# (name, program, expected status, expected value or None)
CASES = [
    ("infinite loop", sol("while True:\n    pass"), "timeout", None),
    ("C-level loop", sol("return sum(range(10**11))"), "timeout", None),
    ("sleep", sol("import time\ntime.sleep(100)"), "timeout", None),
    ("ignore SIGTERM/SIGALRM", sol("import signal\n"
                                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                   "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                                   "signal.alarm(1)\nwhile True:\n    pass"), "timeout", None),
    ("8 GB allocation", sol("x = bytearray(8 * 2**30)\nreturn len(x)"), "error", None),
    ("unbounded list growth", sol("xs = []\nwhile True:\n    xs.append([0] * 10**6)"),
     "error", None),
    ("deep recursion", sol("def f(n):\n    return f(n + 1)\nreturn f(0)"), "error", None),
    ("recursion limit 10**7", sol("import json, sys\nsys.setrecursionlimit(10**7)\nx = []\n"
                                  "for _ in range(3 * 10**5):\n    x = [x]\n"
                                  "return len(json.dumps(x))"),
     "crash", None),
    ("segfault via ctypes", sol("import ctypes\nreturn ctypes.string_at(0)"), "crash", None),
    ("os._exit", sol("import os\nos._exit(0)"), "crash", None),
    ("sys.exit", sol("import sys\nsys.exit(3)"), "error", None),
    ("KeyboardInterrupt", sol("raise KeyboardInterrupt"), "error", None),
    ("fork bomb", sol("import os\nwhile True:\n    os.fork()"), "error", None),
    ("double fork + setsid", sol("import os\nif os.fork() == 0:\n    os.setsid()\n"
                                 "    if os.fork() == 0:\n        import time\n"
                                 "        time.sleep(1000)\nreturn 1"), "error", None),
    ("threads left running", sol("import threading, time\nfor _ in range(4):\n"
                                 "    threading.Thread(target=time.sleep, args=(1000,)).start()\n"
                                 "return 11"), "ok", 11.0),
    ("stdout/stderr flood", sol("import sys\nfor _ in range(50):\n"
                                "    sys.stdout.write('x' * 2**20)\n"
                                "    sys.stderr.write('y' * 2**20)\nreturn 12"), "ok", 12.0),
    ("file-size flood", sol("with open('big.bin', 'wb') as f:\n"
                            "    for _ in range(64):\n        f.write(b'z' * 2**20)\nreturn 1"),
     "error", None),
    ("write outside temp dir", sol("open('/tmp/rlkd_pwned_by_program', 'w').write('x')\n"
                                   "return 1"), "error", None),
    ("write to parent dir", sol("open('../pwned', 'w').write('x')\nreturn 1"), "error", None),
    ("write in own dir", sol("open('ok.txt', 'w').write('fine')\n"
                             "return len(open('ok.txt').read())"), "ok", 4.0),
    ("environment secret", sol(f"import os\nreturn len(os.environ.get('RLKD_TEST_SECRET', ''))"
                               f" + len([v for v in os.environ.values() if '{SECRET}' in v])"),
     "ok", 0.0),
    ("host /proc environ", sol(f"return len(open('/proc/{HOST_PID}/environ').read())"),
     "error", None),
    ("read a home secret", sol("return len(open('/root/.bashrc').read())"), "error", None),
    ("socket connect", sol("import socket\ns = socket.socket()\n"
                           "s.connect(('127.0.0.1', PORT))\nreturn 1"), "error", None),
    ("kill the parent", sol("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                            "return 1"), "error", None),
    ("kill -1", sol("import os, signal\nos.kill(-1, signal.SIGKILL)\nreturn 1"), "error", None),
    ("kill the host", sol(f"import os\nos.kill({HOST_PID}, 9)\nreturn 1"), "error", None),
    ("os.system", sol("import os\nreturn os.system('touch /tmp/rlkd_pwned_system')"),
     "ok", None),
    ("posix_spawn", sol("import os\n"
                        "os.posix_spawn('/bin/touch', ['touch', '/tmp/rlkd_pwned_spawn'], {})\n"
                        "return 1"), "error", None),
    ("ctypes system", sol("import ctypes\n"
                          "return ctypes.CDLL(None).system(b'touch /tmp/rlkd_pwned_ctypes')"),
     "ok", None),
    ("raise hard limits", sol("import resource\n"
                              "resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\nreturn 1"),
     "error", None),
    ("__reduce__ object", sol("import os\nclass Evil:\n    def __reduce__(self):\n"
                              "        return (os.system, ('touch /tmp/rlkd_pwned_reduce',))\n"
                              "return Evil()"), "nonnumeric", None),
    ("__float__ raises", sol("class F:\n    def __float__(self):\n        raise ValueError\n"
                             "return F()"), "nonnumeric", None),
    ("__float__ loops", sol("class F:\n    def __float__(self):\n        while True:\n"
                            "            pass\nreturn F()"), "timeout", None),
    ("__float__ exits", sol("import os\nclass F:\n    def __float__(self):\n"
                            "        os._exit(0)\nreturn F()"), "crash", None),
    ("__eq__ lies", sol("class F(float):\n    def __eq__(self, other):\n        return True\n"
                        "return F(3.0)"), "ok", 3.0),
    ("__str__ raises", sol("class E(Exception):\n    def __str__(self):\n"
                           "        raise RuntimeError\nraise E()"), "error", None),
    ("NaN", sol("return float('nan')"), "nonnumeric", None),
    ("inf", sol("return float('inf')"), "nonnumeric", None),
    ("10**400", sol("return 10**400"), "nonnumeric", None),
    ("2**60", sol("return 2**60"), "nonnumeric", None),
    ("complex", sol("return 3 + 4j"), "nonnumeric", None),
    ("bool", sol("return True"), "nonnumeric", None),
    ("str", sol("return '12'"), "nonnumeric", None),
    ("sympy number", sol("import sympy\nreturn sympy.Rational(7, 2)"), "ok", 3.5),
    ("syntax error", "def solution(:\n    return 1\n", "error", None),
    ("NUL byte", "def solution():\n    return 1\x00\n", "error", None),
    ("lone surrogate", "def solution():\n    return '\udc80'\n", "error", None),
    ("surrogate in code", "def solution():\n    x\udc80 = 1\n    return 1\n", "error", None),
    ("200k-line source", "def solution():\n" + "    x = 1\n" * 200_000 + "    return x\n",
     "ok", 1.0),
    ("look-alike identifiers", sol("\u0430 = 5\nreturn a"), "error", None),  # Cyrillic a
    ("NFKC identifiers", sol("\uff58 = 5\nreturn x"), "ok", 5.0),  # fullwidth x == x
    ("no solution", "x = 1\n", "error", None),
]

# Expected statuses assume Landlock (writes in the scratch dir allowed; as root, programs keep
# uid 0 and can import any installed module). Without it the executor falls back to stricter
# rules (no file writes at all; as root, uid nobody), under which these cases differ.
NEEDS_LANDLOCK = {"write in own dir", "segfault via ctypes", "ctypes system",
                  "ignore SIGTERM/SIGALRM", "recursion limit 10**7", "raise hard limits",
                  "socket connect", "__reduce__ object"}

PWNED = [Path(f"/tmp/rlkd_pwned{s}") for s in ("_by_program", "_system", "_spawn", "_ctypes",
                                                "_reduce")]


@pytest.fixture(scope="module")
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    s.setblocking(False)
    yield s
    s.close()


@pytest.fixture(scope="module")
def ex():
    os.environ["RLKD_TEST_SECRET"] = SECRET
    try:
        with PotExecutor(workers=1, timeout_s=1.0, memory_mb=256, slots=4) as executor:
            yield executor
    finally:
        del os.environ["RLKD_TEST_SECRET"]


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def _processes_in_session(sid: int, exclude: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != exclude:
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("name,program,status,value", CASES, ids=[c[0] for c in CASES])
def test_adversarial(ex, listener, name, program, status, value):
    if "landlock=0" in ex.features and name in NEEDS_LANDLOCK:
        pytest.skip("expected status assumes Landlock")
    for p in PWNED:
        p.unlink(missing_ok=True)
    zygote = ex.zygote_pids()[0]
    program = program.replace("PORT", str(listener.getsockname()[1]))
    # Cases that must finish get room for a loaded CI machine; runaways keep the 1 s deadline.
    timeout = 20.0 if "200k" in name else (1.0 if status == "timeout" else 5.0)
    res = ex.run([program], timeout_s=timeout)[0]
    assert res.status == status, (name, res)
    if value is not None:
        assert res.value == value
    if status != "ok":
        assert res.value is None and res.error
    if name in ("os.system", "ctypes system"):
        assert res.value != 0  # the shell never started
    # The host is unharmed: same zygote, alive; nothing created outside; no connection made.
    assert ex.zygote_pids() == [zygote] and ex.respawns == 0
    assert not any(p.exists() for p in PWNED), name
    with pytest.raises(BlockingIOError):
        listener.accept()
    assert os.environ["RLKD_TEST_SECRET"] == SECRET
    # Nothing the program started is still running: the zygote has no children left and no
    # process besides the zygote remains in its session (a killed one may take a moment to die).
    for _ in range(200):
        children = Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split()
        others = _processes_in_session(_session(zygote), exclude=zygote)
        if not children and not others:
            break
        time.sleep(0.01)
    assert children == [] and others == []


def test_reft_values_of_odd_results(ex):
    progs = [sol("return float('nan')"), sol("return True"), sol("return '12'"),
             sol("return 10**400"), sol("return 3 + 4j"), sol("return 10**20")]
    res = ex.run(progs)
    assert math.isnan(res[0].reft_value)
    assert [r.reft_value for r in res[1:]] == [1.0, 12.0, None, None, 1e20]
    assert all(r.status == "nonnumeric" for r in res)


@pytest.mark.slow
@pytest.mark.parametrize("isolation", ["fork", "worker"])
def test_all_at_once_then_still_healthy(ex, isolation):
    """Every case in one batch (they run concurrently), then ordinary programs still work;
    worker mode must give the same statuses as fork mode."""
    if "landlock=0" in ex.features:
        pytest.skip("expected statuses assume Landlock")
    progs = [p.replace("PORT", "9") for n, p, _, _ in CASES if "200k" not in n]
    want = [s for n, _, s, _ in CASES if "200k" not in n]
    if isolation == "worker":
        with PotExecutor(workers=1, timeout_s=3.0, memory_mb=256, isolation="worker") as wex:
            got = [r.status for r in wex.run(progs)]
            ok = wex.run([sol(f"return {i} + 0.5") for i in range(20)])
    else:
        got = [r.status for r in ex.run(progs, timeout_s=3.0)]  # CPU-bound cases side by side
        ok = ex.run([sol(f"return {i} + 0.5") for i in range(20)])
    assert got == want, [(c[0], g) for c, g, w in zip(CASES, got, want) if g != w]
    assert [r.value for r in ok] == [i + 0.5 for i in range(20)]
    assert not any(p.exists() for p in PWNED)


def test_project_files_unreadable(ex):
    """sys.path entries outside the Python installation (this checkout) are not readable."""
    here = Path(__file__).resolve()
    res = ex.run([sol(f"return len(open({str(here)!r}).read())")], timeout_s=5.0)[0]
    if "landlock=0" in ex.features:
        pytest.skip("read confinement needs Landlock")
    assert res.status == "error" and "PermissionError" in res.error
