"""Program-of-thought conventions, and the zygote that runs programs for the executor.

Two jobs live here because both must stay importable by a bare ``python -I -S`` interpreter
(standard library only):

* the program conventions: ``reft_program`` rewrites a generated program the way ReFT does
  (prepend ``import math`` / ``import sympy``, drop everything after the first blank line, turn
  ``sys.exit`` into ``print``), and ``run_program`` executes one program and calls
  ``solution()``;
* ``main``: the zygote process started by ``rlkd_fast.executor.PotExecutor``. It pre-imports the
  preload modules, freezes the heap for cheap copy-on-write forks and hands control to the C++
  loop (``rlkd_fast._executor.zygote_main``), which forks a confined child per program.

Result classification (``classify``), done inside the confined child so that a hostile return
value's ``__float__``/``__eq__``/``__reduce__`` never runs anywhere else:

* ``ok``: a real number: an ``int`` (not ``bool``) with ``|x| <= 2**53``, or any other object
  except ``str``/``bytes``/``complex`` whose ``float()`` is finite (and within ``2**53`` for ints);
* ``nonnumeric``: everything else (bool, str, NaN, inf, complex, huge ints, objects without
  ``__float__``), with ``reft_value = float(x)`` kept where it exists, since ReFT compares that.
"""

from __future__ import annotations

import builtins
import gc
import math
import os
import sys

OK, ERROR, NONNUMERIC = 0, 1, 4
PLAIN, REFT = 0, 1
CONVENTIONS = {"plain": PLAIN, "reft": REFT}
MAX_EXACT_INT = 2**53  # larger integers are not numeric answers in strict mode


def reft_program(code: str) -> str:
    """ReFT's program rewrite: imports first, ``sys.exit`` -> ``print``, cut at a blank line.

    Lines starting with ``def solution`` are always kept; the first line that is empty after
    stripping ends the program.
    """
    lines = ["import math", "import sympy"]
    for line in code.replace("sys.exit", "print").split("\n"):
        if line.startswith("def solution"):
            lines.append(line)
        elif not line.strip():
            break
        else:
            lines.append(line)
    return "\n".join(lines)


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:400]
    except BaseException:  # a hostile __str__
        return "error (unprintable exception)"


def classify(x: object) -> tuple[int, float | None, float | None, str]:
    """(status, strict value, ReFT value, error) for a program's return value."""
    reft = None
    try:
        f = float(x)
        if type(f) is float:
            reft = f
    except BaseException:
        pass
    kind = type(x).__name__
    if type(x) is bool or isinstance(x, (str, bytes, bytearray, complex)) or reft is None:
        return NONNUMERIC, None, reft, f"non-numeric result of type {kind}"
    if not math.isfinite(reft):
        return NONNUMERIC, None, reft, f"non-finite result {reft!r}"
    if isinstance(x, int) and abs(reft) > MAX_EXACT_INT:
        return NONNUMERIC, None, reft, "integer result too large"
    return OK, reft, reft, ""


def run_program(src: bytes, conventions: int) -> tuple[int, float | None, float | None, str]:
    """Executes one program and calls its ``solution()``; never raises."""
    try:
        code = compile(src.decode("utf-8", "surrogatepass"), "<program>", "exec",
                       dont_inherit=True)
        glb = {"__name__": "__main__", "__builtins__": builtins}
        if conventions == REFT:
            # ReFT executes with separate globals/locals holding math and sympy.
            for name in ("math", "sympy"):
                if name in sys.modules:
                    glb[name] = sys.modules[name]
            loc: dict = {}
            exec(code, glb, loc)
            fn = loc["solution"] if "solution" in loc else glb.get("solution")
        else:
            exec(code, glb)
            fn = glb.get("solution")
        if not callable(fn):
            return ERROR, None, None, "NameError: the program defines no solution()"
        result = fn()
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        return ERROR, None, None, _describe(exc)
    try:
        return classify(result)
    except BaseException as exc:
        return ERROR, None, None, _describe(exc)


# --- worker mode: detect interpreter state a program changed ------------------------------------

_snapshot: tuple | None = None
_watched: tuple[str, ...] = ()


def _fingerprint() -> tuple:
    import _thread
    import signal

    mods = sys.modules
    dicts = (builtins.__dict__, sys.__dict__, *(mods[m].__dict__ for m in _watched if m in mods))
    return (
        os.getcwd(), os.listdir("."), len(mods), tuple(mods.get(m) for m in _watched),
        tuple(tuple(d.values()) for d in dicts), tuple(len(p) for p in (sys.path, sys.meta_path)),
        sys.gettrace(), sys.getprofile(), sys.getrecursionlimit(), gc.isenabled(),
        _thread._count(), signal.getitimer(signal.ITIMER_REAL),
        tuple(signal.getsignal(s) for s in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT)),
    )


def _same(a: tuple, b: tuple) -> bool:
    """Identity, not ==, for objects a program could have replaced (its __eq__ could lie)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tuple) and isinstance(y, tuple):
            if not _same(x, y):
                return False
        elif x is not y and (type(x) not in (int, str, float, list, bool) or x != y):
            return False
    return True


def state_clean(take_snapshot: bool) -> bool:
    """Worker mode: snapshot the interpreter (True) or tell whether it still matches it.

    Watched: cwd and its (empty) listing, sys.modules (count and the preloaded modules), the
    namespaces of builtins, sys and the preloaded modules (identity of every value), sys.path
    and meta_path sizes, trace/profile hooks, recursion limit, gc switch, running threads,
    pending timers and signal handlers. Not watched: attributes deeper down (a patched class
    inside sympy, a reseeded ``random``); use isolation="fork" when that matters.
    """
    global _snapshot
    if take_snapshot:
        gc.enable()
        _snapshot = _fingerprint()
        return True
    return _snapshot is not None and _same(_fingerprint(), _snapshot)


# --- zygote entry point -----------------------------------------------------------------------

def _fail_hello(message: str) -> None:
    import struct

    err = message.encode("utf-8", "replace")[:512]
    os.write(4, struct.pack("<IQBBHddd", 0x53524B52, 0, 5, 8, len(err), 0.0, 0.0, 0.0) + err)


def _warm_sympy(sympy) -> None:
    """sympy imports solvers and fills caches on first use; do it once here, not per child."""
    x = sympy.symbols("x")
    sympy.solve(sympy.Eq(3 * x + 4, 19), x)
    sympy.simplify(sympy.Rational(3, 4) * x + sympy.sqrt(8))
    float(sympy.N(sympy.pi))


def main(argv: list[str]) -> None:
    """Zygote: ``pot.py CONFIG_JSON BASE_DIR HOST_PID`` with the host's pipes on fds 3 and 4."""
    global _watched
    import json

    cfg = json.loads(argv[1])
    sys.path[:0] = [p for p in cfg["path"] if p not in sys.path]
    try:
        import importlib
        import importlib.util

        spec = importlib.util.spec_from_file_location("rlkd_fast._executor", cfg["ext"])
        core = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(core)
        for name in cfg["preload"]:
            importlib.import_module(name)
    except BaseException as exc:
        _fail_hello(f"zygote start-up failed: {_describe(exc)}")
        os._exit(1)
    _watched = tuple(cfg["preload"])
    if "sympy" in sys.modules:
        _warm_sympy(sys.modules["sympy"])
    gc.collect()
    gc.freeze()  # children then leave the preloaded heap alone (fewer copy-on-write faults)
    # Fork-mode children live for one short program: no cycle collection (its traversals and
    # the pages they dirty cost more than the garbage). Workers switch it back on.
    gc.disable()
    settings = {k: cfg[k] for k in ("worker", "max_programs", "demote", "active", "memory_mb",
                                    "fsize_mb", "nofile", "read_roots")}
    settings.update(base_dir=argv[2], host_pid=int(argv[3]))
    core.zygote_main(3, 4, settings, run_program, state_clean)


if __name__ == "__main__":
    main(sys.argv)
