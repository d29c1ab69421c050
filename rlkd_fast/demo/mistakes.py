"""Mistakes a student makes, for testing judges: corrupted copies of gold programs, each
labelled by running it.

The kinds follow the warm-up student's own wrong programs (a miscopied number, a name that was
never defined, most often; a changed operator, swapped operands, an early return, a cut-off
body); every program is labelled by execution, never by how it was made. The embedded judge's
held-out test (``tests/demo/test_embedded_judge.py``) ranks gold programs against them.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

_OPS = ["+", "-", "*", "/"]
_ASSIGN = re.compile(r"^(\s+)(\w+) = (.+)$")
_BINOP = re.compile(r"(\w+(?:\.\d+)?) ([+\-*/]) (\w+(?:\.\d+)?)")


_NUMBER_LINE = re.compile(r"^(\s+\w+ = )(\d+)$", re.M)
_WORD = re.compile(r"\b([a-z]+)(_\w+)?\b")
# The nouns synthetic programs name their variables after: a student that swaps one for another
# (``flowers_each`` for ``stickers_each``) uses a name that was never defined.
_NOUNS = ("apples", "marbles", "stickers", "cookies", "stamps", "shells", "cards", "pencils",
          "beads", "books", "eggs", "candies", "toys", "balloons", "flowers", "coins", "boxes",
          "bags", "jars", "packs", "baskets", "money", "cakes", "muffins", "pies", "chairs",
          "bottles", "lamps", "melons", "shirts", "hats", "cups", "friends", "total")


def _body_start(program: str) -> int:
    """Where the body starts: after the docstring's closing quotes, else after the def line."""
    first = program.find('"""')
    close = program.find('"""', first + 3) if first >= 0 else -1
    return close + 3 if close >= 0 else program.find("\n") + 1


def _miscopy(program: str, question: str, rng: random.Random) -> str | None:
    """A number copied wrong: off by a little, a digit added or dropped, or another number of
    the question."""
    found = list(_NUMBER_LINE.finditer(program))
    if not found:
        return None
    m = rng.choice(found)
    old = m.group(2)
    others = [n for n in re.findall(r"\d+", question) if n != old]
    kind = rng.choice(("near", "digit", "other"))
    if kind == "near":
        new = str(max(1, int(old) + rng.choice((-10, -2, -1, 1, 2, 10))))
    elif kind == "digit":
        new = old + str(rng.randint(0, 9)) if len(old) == 1 or rng.random() < 0.5 else old[:-1]
    else:
        new = rng.choice(others) if others else str(int(old) + 1)
    return program[:m.start(2)] + new + program[m.end(2):]


def _rename(program: str, rng: random.Random) -> str | None:
    """One use of a name replaced: its noun swapped for another (usually undefined), or
    another name of the program."""
    start = _body_start(program)
    body = program[start:]
    names = [m for m in _WORD.finditer(body) if m.group(1) in _NOUNS]
    if not names:
        return None
    m = rng.choice(names)
    new = rng.choice([n for n in _NOUNS if n != m.group(1)])
    return program[:start + m.start(1)] + new + program[start + m.end(1):]


#: The kinds of mistake, each as often as it is drawn.
KINDS = ("miscopy", "miscopy", "rename", "rename", "operator", "swap", "early_return", "truncate")


def corrupt_program(program: str, rng: random.Random, question: str = "",
                    kinds: Sequence[str] = KINDS) -> str:
    """One plausible mistake in ``program`` (a ReFT-style ``def solution()`` function), of a
    kind drawn from ``kinds``: by default the kinds a warm-up student makes most (miscopied
    numbers, undefined names) twice as often as the others (a changed operator, swapped
    operands, an early return, a cut-off body)."""
    kind = rng.choice(kinds)
    if kind == "miscopy":
        return _miscopy(program, question, rng) or _classic(program, rng, "number")
    if kind == "rename":
        return _rename(program, rng) or _classic(program, rng, "operator")
    return _classic(program, rng, kind)


def _classic(program: str, rng: random.Random, kind: str) -> str:
    lines = program.split("\n")
    body = [i for i, line in enumerate(lines) if _ASSIGN.match(line)]
    if not body:
        return program
    arithmetic = [i for i in body if _BINOP.search(lines[i])]
    if kind == "operator" and arithmetic:
        i = rng.choice(arithmetic)
        m = _BINOP.search(lines[i])
        op = rng.choice([o for o in _OPS if o != m.group(2)])
        lines[i] = lines[i][: m.start(2)] + op + lines[i][m.end(2):]
    elif kind == "swap" and arithmetic:
        i = rng.choice(arithmetic)
        m = _BINOP.search(lines[i])
        swapped = f"{m.group(3)} {m.group(2)} {m.group(1)}"
        lines[i] = lines[i][: m.start()] + swapped + lines[i][m.end():]
    elif kind == "truncate" and len(body) >= 2:
        cut = rng.choice(body[1:])
        lines = lines[:cut]
    elif kind == "early_return" and len(body) >= 2:
        cut = rng.choice(body[:-1])
        name = _ASSIGN.match(lines[cut]).group(2)
        indent = _ASSIGN.match(lines[cut]).group(1)
        ret = next((j for j in range(len(lines)) if lines[j].strip().startswith("return")), None)
        if ret is not None:
            lines[ret] = f"{indent}return {name}"
    else:
        literal = re.compile(r"\d+(\.\d+)?")
        numeric = [i for i in body if literal.fullmatch(_ASSIGN.match(lines[i]).group(3))]
        if not numeric:
            return _classic(program, rng, "operator") if arithmetic else program
        i = rng.choice(numeric)
        m = _ASSIGN.match(lines[i])
        value = float(m.group(3))
        new = max(1, int(value) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
        lines[i] = f"{m.group(1)}{m.group(2)} = {new}"
    return "\n".join(lines)


def label_programs(candidates: Sequence[tuple[str, str, float]],
                   run_programs) -> list[tuple[str, str, bool]]:
    """(question, program, is_correct) for (question, program, gold answer) candidates: each
    program executed with ``run_programs`` and compared with the answer (within 1e-2)."""
    results = run_programs([p for _, p, _ in candidates])
    out = []
    for (q, p, a), res in zip(candidates, results, strict=True):
        ok = res.status == "ok" and res.value is not None and math.isfinite(res.value) \
            and abs(res.value - a) <= 1e-2
        out.append((q, p, ok))
    return out
