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

* ``ok``: a real number: any object except ``str``/``bytes``/``complex`` and truth values whose
  ``float()`` is finite, and, for an integer of any type, whose exact value is within ``2**53``
  (beyond it a double rounds: ``2**60 + 1`` would match a gold answer of ``2**60``);
* ``nonnumeric``: everything else (truth values of any library: ``bool``, ``numpy.bool_``,
  boolean 0-d arrays and tensors, sympy's ``true``; str, NaN, inf, complex; integers beyond
  ``2**53`` whether ``int``, numpy, sympy or a 0-d array or tensor; objects without
  ``__float__``), with ``reft_value = float(x)`` kept where it exists, since ReFT compares that.

This is the only place a returned object becomes a number: the C++ side receives the Python
float made here and copies it into the result record as a double, losslessly.
"""

from __future__ import annotations

import builtins
import gc
import math
import operator
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


def bool_like(x: object) -> bool:
    """True for a truth value of any library: ``bool``, ``numpy.bool_``, a boolean 0-d array or
    tensor (anything whose type, or whose ``dtype``, is a bool). sympy's ``true``/``false`` have
    no ``float()`` and are non-numeric anyway."""
    if any(c.__name__ in ("bool", "bool_") for c in type(x).__mro__):
        return True
    try:
        return str(getattr(x, "dtype", "")) in ("bool", "torch.bool")
    except BaseException:  # a hostile dtype property
        return False


def exact_int(x: object) -> int | None:
    """The exact value of an integer of any type (``int``, numpy and sympy integers, integer 0-d
    arrays and tensors: whatever has ``__index__``), else None. Call after ``bool_like``."""
    if isinstance(x, float):
        return None
    try:
        return operator.index(x)
    except BaseException:
        return None


def classify(x: object) -> tuple[int, float | None, float | None, str]:
    """(status, strict value, ReFT value, error) for a program's return value (or any value)."""
    reft = None
    try:
        f = float(x)
        if type(f) is float:
            reft = f
    except BaseException:
        pass
    kind = type(x).__name__
    if bool_like(x) or isinstance(x, (str, bytes, bytearray, complex)) or reft is None:
        return NONNUMERIC, None, reft, f"non-numeric result of type {kind}"
    if not math.isfinite(reft):
        return NONNUMERIC, None, reft, f"non-finite result {reft!r}"
    n = exact_int(x)  # the exact value: 2**53 + 1 rounds to 2**53 as a float
    if n is not None and abs(n) > MAX_EXACT_INT:
        return NONNUMERIC, None, reft, f"integer result too large ({kind})"
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
