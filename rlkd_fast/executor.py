"""Sandboxed execution of untrusted program-of-thought code.

``PotExecutor`` runs many short Python programs (each defines ``solution()``) and returns one
``ExecResult`` per program. The work happens in a C++ core (``rlkd_fast._executor``):

* **Zygotes, never a fork of the trainer.** Each of ``workers`` zygotes is a fresh
  ``python -I -S`` started with ``posix_spawn`` in a clean environment; it pre-imports
  ``preload`` (math and sympy by default, with sympy's solver warmed up), freezes its heap,
  backs it with transparent huge pages (a fork then copies a few page-middle-directory entries
  instead of thousands of PTEs) and waits for programs. A C++ thread per zygote in the trainer
  feeds it from a shared queue and keeps up to ``slots`` programs in flight, of which the
  zygote runs ``active`` at full priority. Dead or unresponsive zygotes are killed, their
  in-flight programs reported as ``infra_error``, and a new zygote is started.
* **Confinement of every program process**: its own process group; rlimits (address space =
  the interpreter plus ``memory_mb``, CPU, file size ``fsize_mb``, 64 descriptors, no core
  files); no capabilities (as root without Landlock: uid ``nobody``); ``PR_SET_NO_NEW_PRIVS``;
  Landlock (when the kernel has it): read only the Python installation and system libraries,
  write only a fresh empty scratch directory (its cwd), no TCP, no signals or ptrace outside;
  hand-written seccomp filters, an allowlist installed once in the zygote and a short child
  layer (no fork/exec/sockets/ptrace/mount, no raising limits, no signals to other processes,
  no ownership/mode/identity changes; threads allowed); closed descriptors (stdout/stderr go to
  /dev/null); an empty network namespace (user+net namespaces where the kernel allows);
  ``PR_SET_PDEATHSIG`` so nothing outlives its zygote. Forks are refused by seccomp, which also
  holds for root, whom ``RLIMIT_NPROC`` does not bind.
* **A hard wall-clock deadline from outside**: the zygote SIGKILLs the program's process group
  at ``timeout_s`` and reports the timeout at once; the host kills the whole zygote if it
  stays silent ``grace_s`` past twice the deadline. A program that has burnt a twentieth of
  its deadline (at least 50 ms) in CPU time is demoted (``demote``): stopped while its zygote
  has other programs to run, continued at ``SCHED_IDLE`` when it has none, so runaway loops
  stop taking cores from the programs that finish.
* **Binary results**: status byte, two doubles, a short UTF-8 error text. Nothing is unpickled;
  a returned object is converted to a float inside the sandbox (see ``rlkd_fast.pot``).
* **Nothing left behind**: each zygote's scratch directory,
  ``/tmp/rlkd-exec-<owner pid>-<owner start time>-XXXXXX``, goes with it on ``close``; those of
  an owner that was killed (SIGKILL leaves it no chance) are removed when the next executor
  starts, and only those: a directory of a live process, or another user's, stays.

Isolation modes and their trade-off:

* ``isolation="fork"`` (default): a fresh forked child per program. Nothing a program does can
  reach the next one. Cost: fork, confinement and exit of a child of an interpreter with sympy
  loaded, about 2-4 ms of CPU per program on this project's 2-core machine (see
  ``benchmarks/RESULTS.md``). The child is a bare ``fork()`` of the single-threaded
  zygote, without Python's at-fork hooks: every child starts from the zygote's ``random``
  state, so programs drawing random numbers are reproducible.
* ``isolation="worker"``: each zygote keeps up to ``slots`` confined workers that run programs
  one after another, several times faster. A worker is replaced after a timeout, a crash, after
  ``max_programs_per_worker`` programs, and whenever a program changed state it can see (cwd
  or files in the scratch dir, sys.modules, values in the namespaces of builtins, sys and the
  preloaded modules, running threads, timers, signal handlers, trace hooks, recursion limit).
  Changes deeper inside an object (a patched class attribute inside sympy, a reseeded
  ``random``) are not detected, so one program could influence a later one's result in the
  same worker; confinement against the host is the same as in fork mode.

Statuses: ``ok`` (a finite real number, see ``rlkd_fast.pot.classify``), ``error`` (an
exception, including SyntaxError, SystemExit, MemoryError, PermissionError from the sandbox),
``timeout``, ``crash`` (killed by a signal such as SIGSEGV, or exited without a result),
``nonnumeric`` (returned a truth value of any type such as bool or numpy.bool_, str, NaN, inf,
complex, an integer of any type beyond 2**53, ...), ``infra_error`` (the executor, not the
program, failed: a zygote died mid-run; retrying is reasonable). The returned object becomes a
number only inside the program's sandbox (``rlkd_fast.pot.classify``); the record carries that
float, so nothing of the object reaches this process.

Example::

    with PotExecutor(workers=2, timeout_s=2.0, conventions="reft") as ex:
        results = ex.run(programs)             # list[ExecResult]
        future = ex.submit(more_programs)      # overlap with generation
        ...
        more = future.result()
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlkd_fast import pot

STATUSES = ("ok", "error", "timeout", "crash", "nonnumeric", "infra_error")
ISOLATION = ("fork", "worker")

# The zygote's whole environment: nothing of the trainer's (tokens, keys) reaches a program.
_ZYGOTE_ENV = ("PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C.UTF-8")
_SYSTEM_READ_ROOTS = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
                      "/usr/share/zoneinfo", "/etc/localtime", "/etc/ld.so.cache")


@dataclass(frozen=True, slots=True)
class ExecResult:
    """One program's outcome.

    status: one of ``STATUSES``. value: the answer as a float when status is ``ok``, else None.
    error: a short text for anything but ``ok``. reft_value: ``float(result)`` as ReFT computes
    it (also for bool/str/NaN results; None when that raises or the program failed).
    elapsed_s: seconds from the program's start to its end as the zygote saw it.
    """

    status: str
    value: float | None = None
    error: str = ""
    reft_value: float | None = None
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _load_core():
    if not sys.platform.startswith("linux"):
        raise RuntimeError("PotExecutor needs Linux (namespaces, seccomp, pidfd); "
                           f"this is {sys.platform}")
    try:
        from rlkd_fast import _executor
    except ImportError as exc:
        raise RuntimeError("the C++ executor core rlkd_fast._executor is not built; "
                           "reinstall with `pip install -e .` (needs g++ and pybind11)") from exc
    return _executor


def _read_roots(paths: Sequence[str]) -> list[str]:
    """What programs may read: the Python installation, package directories and system
    libraries. Other sys.path entries (a project checkout, a home directory on PYTHONPATH)
    stay unreadable; the zygote imports the preload modules from them before confinement."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    packages = [p for p in paths if any(p.startswith(x + os.sep) for x in prefixes)
                or os.path.basename(p) in ("site-packages", "dist-packages")]
    roots = {*prefixes, *packages, *_SYSTEM_READ_ROOTS}
    return sorted(r for r in roots if r and os.path.exists(r))


class PotExecutor:
    """Runs untrusted PoT programs in sandboxed processes; see the module docstring.

    Args:
        workers: zygote processes (one feeding thread each in this process).
        timeout_s: wall-clock limit per program (``run``/``submit`` may override it).
        memory_mb: address space a program may add to the preloaded interpreter.
        preload: modules every zygote imports once (programs then use them for free).
        isolation: ``"fork"`` (a child per program) or ``"worker"`` (reused, checked workers).
        conventions: ``"plain"`` (run the text, call ``solution()``) or ``"reft"``
            (``rlkd_fast.pot.reft_program`` first, ReFT's separate globals/locals).
        slots: programs sent to each zygote at once (default 16).
        active: of those, how many young ones (started < 30 ms ago) a zygote runs at once
            (default 2); the others wait in its queue. Older programs do not count, so slow
            ones and runaways never block the rest.
        fsize_mb: largest file a program may write in its scratch directory.
        max_programs_per_worker: worker mode: replace a worker after this many programs.
        grace_s: how long past a deadline a silent zygote is tolerated before it is replaced.
        demote: a program that has used a twentieth of its deadline in CPU time (at least
            0.05 s) runs on only while its zygote has nothing else to do (stopped otherwise,
            ``SCHED_IDLE`` when running): runaway loops then stop taking CPU from programs that
            finish, while their wall-clock deadline stays the same. In a large batch, a slow
            but finite program may then time out where it would have finished; pass
            ``demote=False`` when such programs matter more than throughput.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 2.0, memory_mb: int = 1024,
                 preload: Sequence[str] = ("math", "sympy"), isolation: str = "fork",
                 conventions: str = "plain", slots: int | None = None, fsize_mb: int = 16,
                 max_programs_per_worker: int = 1000, grace_s: float = 2.0,
                 demote: bool = True, active: int | None = None):
        if isolation not in ISOLATION:
            raise ValueError(f"isolation must be one of {ISOLATION}, got {isolation!r}")
        if conventions not in pot.CONVENTIONS:
            raise ValueError(f"conventions must be one of {tuple(pot.CONVENTIONS)}, "
                             f"got {conventions!r}")
        if workers < 1 or (slots is not None and slots < 1) or (active is not None and active < 1):
            raise ValueError("workers, slots and active must be >= 1")
        if not timeout_s > 0 or memory_mb < 16 or fsize_mb < 0:
            raise ValueError("need timeout_s > 0, memory_mb >= 16, fsize_mb >= 0")
        core = _load_core()
        self.timeout_s = float(timeout_s)
        self.isolation = isolation
        self.conventions = conventions
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        config = {
            "path": paths, "ext": core.__file__, "preload": list(preload),
            "worker": isolation == "worker", "max_programs": int(max_programs_per_worker),
            "demote": bool(demote), "active": int(active or 2),
            "memory_mb": int(memory_mb), "fsize_mb": int(fsize_mb), "nofile": 64,
            "read_roots": _read_roots(paths),
        }
        argv = [sys.executable, "-I", "-S", "-B", pot.__file__, json.dumps(config)]
        slots = slots or 16
        self._core = core.Executor(argv, list(_ZYGOTE_ENV), workers, slots, float(grace_s), 120.0)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._owner = os.getpid()

    # -- running ------------------------------------------------------------------------------
    def run(self, programs: Sequence[str], timeout_s: float | None = None) -> list[ExecResult]:
        """Runs every program; returns their results in order. Releases the GIL while waiting;
        safe to call from several threads at once."""
        if self._closed:
            raise RuntimeError("PotExecutor is closed")
        if os.getpid() != self._owner:
            raise RuntimeError("a PotExecutor cannot be used in a forked child; make a new one")
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        if not timeout > 0:
            raise ValueError("timeout_s must be > 0")
        reft = self.conventions == "reft"
        sources = []
        for p in programs:
            if not isinstance(p, str):
                raise TypeError(f"programs must be str, got {type(p).__name__}")
            text = pot.reft_program(p) if reft else p
            sources.append(text.encode("utf-8", "surrogatepass"))
        raw = self._core.run(sources, max(1, round(timeout * 1000)), pot.CONVENTIONS[
            self.conventions])
        return [ExecResult(STATUSES[s], v, e, r, t) for s, v, r, e, t in raw]

    def submit(self, programs: Sequence[str],
               timeout_s: float | None = None) -> concurrent.futures.Future:
        """Starts ``run(programs)`` in the background; the future holds ``list[ExecResult]``."""
        with self._lock:
            if self._closed:
                raise RuntimeError("PotExecutor is closed")
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="pot-executor")
            return self._pool.submit(self._run_submitted, list(programs), timeout_s)

    def _run_submitted(self, programs: list[str], timeout_s: float | None) -> list[ExecResult]:
        """``run`` for ``submit``: a batch that close() ends before or while it runs gets
        ``infra_error`` results, as ``close`` promises, instead of an exception."""
        try:
            return self.run(programs, timeout_s)
        except RuntimeError:
            if not self._closed:
                raise
            return [ExecResult("infra_error", error="executor closed")] * len(programs)

    # -- lifecycle and introspection ----------------------------------------------------------
    def close(self) -> None:
        """Stops the zygotes at once: programs running or waiting, from ``run`` in other
        threads or from ``submit``, get ``infra_error`` ("executor closed"). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if os.getpid() != self._owner:  # a forked copy: the threads and zygotes are the parent's
            self._core.close()  # only lets go of the copies
            return
        self._core.close()  # ends the batches in flight; then the pool's threads return
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> PotExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.close()

    def zygote_pids(self) -> list[int]:
        """Process ids of the live zygotes (-1 while one is being restarted)."""
        return list(self._core.zygote_pids())

    @property
    def respawns(self) -> int:
        """How many zygotes were restarted after dying."""
        return self._core.respawns()

    @property
    def features(self) -> str:
        """The sandbox features found at start-up, e.g. ``landlock=7 netns=1 uid=0``."""
        return self._core.features()
