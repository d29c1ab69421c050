"""The offline demo's data: GSM8K-style word problems of 1-4 arithmetic steps, generated.

A problem is a story: a start sentence sets a quantity, each event sentence applies one or two
arithmetic operations to it, and a question asks for the final value. Four scenes (collecting
items, money, a workplace, comparing people) each bring their own wordings, and names and nouns
are drawn independently, so one skeleton (scene + operations) appears with many numbers and
wordings. The program copies every number of the question into a variable and spells each
operation on its own line, in ReFT's format.

:func:`synthetic_problem` gives one problem per ``(seed, index)``, :func:`synthetic_split`
disjoint ``train`` / ``unlabeled`` / ``test`` splits of any size; :func:`generate` is what the
data registry calls for ``load_split("synthetic:N", ...)``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from rlkd_fast.data.problem import Problem
from rlkd_fast.prompts import program_header

__all__ = ["SYNTHETIC_SIZES", "SYNTHETIC_SPLITS", "generate", "synthetic_problem",
           "synthetic_split", "synthetic_stream"]

SYNTHETIC_SPLITS = ("train", "unlabeled", "test")
#: Default sizes of ``load_split("synthetic", split=...)``.
SYNTHETIC_SIZES = {"train": 4000, "unlabeled": 4000, "test": 1000}
# A problem's split is a hash of its skeleton and numbers (not names or wordings), so the splits
# never share a problem, whatever the seed: buckets [0, 60) train, [60, 85) unlabeled, rest test.
_SPLIT_BUCKETS = {"train": (0, 60), "unlabeled": (60, 85), "test": (85, 100)}
_MAX_MISSES = 20_000  # draws without a new problem before a split counts as exhausted

_NAMES = (
    ("Ava", "she"), ("Ben", "he"), ("Carla", "she"), ("Dev", "he"), ("Emma", "she"),
    ("Finn", "he"), ("Grace", "she"), ("Hugo", "he"), ("Iris", "she"), ("Jack", "he"),
    ("Kira", "she"), ("Leo", "he"), ("Maya", "she"), ("Noah", "he"), ("Olga", "she"),
    ("Pablo", "he"), ("Quinn", "she"), ("Ravi", "he"), ("Sara", "she"), ("Tom", "he"),
)  # fmt: skip
_ITEMS = (
    "apples", "marbles", "stickers", "cookies", "stamps", "shells", "cards", "pencils",
    "beads", "books", "eggs", "candies", "toys", "balloons", "flowers", "coins",
)  # fmt: skip
_BOXES = (
    ("boxes", "box"),
    ("bags", "bag"),
    ("jars", "jar"),
    ("packs", "pack"),
    ("baskets", "basket"),
)
_THINGS = ("book", "hat", "ticket", "toy", "shirt", "lamp", "game", "plant")
_PLACES = (
    ("bakery", ("cakes", "muffins", "pies", "loaves")),
    ("factory", ("toys", "chairs", "bottles", "lamps")),
    ("farm", ("eggs", "melons", "pumpkins", "apples")),
    ("shop", ("shirts", "hats", "cups", "candles")),
)

_OBJ = {"she": "her", "he": "him"}
_POSS = {"she": "her", "he": "his"}


class _Story:
    """Builds one problem: sentences, program lines and the exact running value."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.sentences: list[str] = []
        self.lines: list[str] = []
        self.skeleton: list[str] = []
        self.numbers: list[int] = []
        self.names: set[str] = set()
        self.used: set[object] = set()
        self.other_named = False
        self.ops = 0

    def fresh(self, choices: tuple) -> Any:
        """A choice not yet used in this story (names and things do not repeat)."""
        left = [c for c in choices if c not in self.used]
        pick = self.rng.choice(left)
        self.used.add(pick)
        return pick

    def number(self, lo: int, hi: int) -> int:
        """A number in [lo, hi] not yet used in this question (so copying is unambiguous)."""
        for _ in range(20):
            n = self.rng.randint(lo, hi)
            if n not in self.numbers:
                self.numbers.append(n)
                return n
        raise _Retry

    def var(self, name: str, value: int | None = None, expr: str | None = None) -> str:
        """Assign a fresh variable: a number copied from the question, or an expression."""
        base, k = name, 2
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        self.lines.append(f"{name} = {value if expr is None else expr}")
        return name

    def op(self, name: str, a: str, sym: str, b: str) -> str:
        self.ops += 1
        return self.var(name, expr=f"{a} {sym} {b}")

    def say(self, text: str | tuple[str, ...], **kw: Any) -> None:
        """Add a sentence: ``text``, or one of several wordings, filled in with ``kw``."""
        if isinstance(text, tuple):
            text = self.rng.choice(text)
        self.other_named = "{friend}" in text  # then the next sentence names the subject
        text = text.format(**kw)
        self.sentences.append(text[0].upper() + text[1:])

    def divisors(self, v: int) -> list[int]:
        """Divisors of ``v`` in [2, 12] (below ``v``) not yet used in this question."""
        return [d for d in range(2, min(12, v - 1) + 1) if v % d == 0 and d not in self.numbers]

    def divisor(self, v: int) -> int:
        n = self.rng.choice(self.divisors(v))
        self.numbers.append(n)
        return n


class _Retry(Exception):
    """The drawn numbers do not fit (no divisor, a repeat): draw the problem again."""


# Each scene: (story, steps) -> (final variable, final value, question sentence). Values are
# exact ints; every event picks among the operations that keep them positive integers.


def _scene_collect(s: _Story, steps: int) -> tuple[str, int, str]:
    rng = s.rng
    name, pron = s.fresh(_NAMES)
    items = rng.choice(_ITEMS)
    kw = {
        "name": name,
        "pron": pron,
        "obj": _OBJ[pron],
        "poss": _POSS[pron],
        "items": items,
    }
    if steps >= 2 and rng.random() < 0.4:
        boxes, box = rng.choice(_BOXES)
        a, b = s.number(2, 9), s.number(3, 15)
        s.say(("{name} has {a} {boxes} of {items} with {b} in each {box}.",
               "{name} buys {a} {boxes} of {items}. Each {box} holds {b} {items}."),
              a=a, b=b, boxes=boxes, box=box, **kw)
        s.skeleton.append("collect:boxes")
        cur = s.op(items, s.var(boxes, a), "*", s.var(f"{items}_per_{box}", b))
        value = a * b
    else:
        value = s.number(8, 90)
        s.say(("{name} has {v} {items}.",
               "{name} collected {v} {items}.",
               "There are {v} {items} in {poss} room."), v=value, **kw)
        s.skeleton.append("collect:start")
        cur = s.var(items, value)
    while s.ops < steps:
        left = steps - s.ops
        kinds = ["add", "sub", "sub"] if value > 3 else ["add"]
        if value % 2 == 0 and value >= 4:
            kinds.append("half")
        if left >= 2:
            kinds.append("buy_boxes")
        if left == 1 and s.divisors(value):
            kinds += ["share", "share"]
        kind = rng.choice(kinds)
        kw["friend"] = s.fresh(_NAMES)[0]
        kw["pron"] = name if s.other_named else pron
        s.skeleton.append(kind)
        if kind == "add":
            n = s.number(2, 40)
            verb, vname = rng.choice((("finds", "found"), ("buys", "bought"), ("gets", "got")))
            text = rng.choice(("{pron} {verb} {n} more {items}.", "{pron} {verb} {n} more."))
            if rng.random() < 0.3:
                text, vname = "{friend} gives {obj} {n} more {items}.", "given"
            s.say(text, verb=verb, n=n, **kw)
            cur, value = s.op(f"{items}_total", cur, "+", s.var(vname, n)), value + n
        elif kind == "sub":
            n = s.number(1, min(40, value - 1))
            verb, vname = rng.choice(
                (
                    ("gives away", "given_away"),
                    ("loses", "lost"),
                    ("sells", "sold"),
                    ("uses", "used"),
                )
            )
            text = rng.choice(("{pron} {verb} {n} of them.", "{pron} {verb} {n} {items}."))
            if rng.random() < 0.3:
                text, vname = "{pron} gives {n} {items} to {friend}.", "given"
            s.say(text, verb=verb, n=n, **kw)
            cur, value = s.op(f"{items}_left", cur, "-", s.var(vname, n)), value - n
        elif kind == "half":
            s.say(("{pron} gives half of them to {friend}.",
                   "{pron} loses half of {poss} {items}."), **kw)
            cur, value = s.op(f"{items}_left", cur, "/", "2"), value // 2
        elif kind == "buy_boxes":
            boxes, box = rng.choice(_BOXES)
            n, m = s.number(2, 6), s.number(3, 12)
            s.say(
                "{pron} then buys {n} {boxes} with {m} {items} in each {box}.",
                n=n,
                m=m,
                boxes=boxes,
                box=box,
                **kw,
            )
            new = s.op(f"new_{items}", s.var(boxes, n), "*", s.var(f"{items}_per_{box}", m))
            cur, value = s.op(f"{items}_total", cur, "+", new), value + n * m
        else:  # share: the question changes to a per-person amount
            n = s.divisor(value)
            s.say("{pron} shares them equally among {n} friends.", n=n, **kw)
            cur = s.op(f"{items}_each", cur, "/", s.var("friends", n))
            return cur, value // n, f"How many {items} does each friend get?"
    who = name if s.other_named else pron
    question = rng.choice((f"How many {items} does {name} have now?",
                           f"How many {items} does {who} have in the end?"))
    return cur, value, question


def _scene_money(s: _Story, steps: int) -> tuple[str, int, str]:
    rng = s.rng
    name, pron = s.fresh(_NAMES)
    kw = {"name": name, "pron": pron, "obj": _OBJ[pron]}
    if steps >= 2 and rng.random() < 0.35:
        a, b = s.number(5, 20), s.number(2, 9)
        s.say(("{name} earns ${a} a day for {b} days.",
               "{name} works {b} days and earns ${a} each day."), a=a, b=b, **kw)
        s.skeleton.append("money:wage")
        cur, value = s.op("money", s.var("daily_pay", a), "*", s.var("days", b)), a * b
    else:
        value = s.number(20, 99)
        s.say(("{name} has ${v}.",
               "{name} saved ${v}."), v=value, **kw)
        s.skeleton.append("money:start")
        cur = s.var("money", value)
    while s.ops < steps:
        left = steps - s.ops
        kinds = ["earn", "spend"] if value > 3 else ["earn"]
        if left >= 2 and value > 8:
            kinds.append("buy")
        if left == 1 and s.divisors(value):
            kinds.append("split")
        kind = rng.choice(kinds)
        kw["friend"] = s.fresh(_NAMES)[0]
        kw["pron"] = name if s.other_named else pron
        s.skeleton.append(kind)
        thing = s.fresh(_THINGS)
        if kind == "earn":
            n = s.number(3, 40)
            text, vname = rng.choice(
                (("{pron} earns ${n} more.", "earned"), ("{friend} gives {obj} ${n}.", "gift"))
            )
            s.say(text, n=n, **kw)
            cur, value = s.op("money_total", cur, "+", s.var(vname, n)), value + n
        elif kind == "spend":
            n = s.number(1, min(40, value - 1))
            s.say(("{pron} spends ${n} on a {thing}.",
                   "{pron} pays ${n} for a {thing}."), n=n, thing=thing, **kw)
            cur, value = s.op("money_left", cur, "-", s.var(f"{thing}_cost", n)), value - n
        elif kind == "buy":
            divs = [p for p in range(2, 13) if value // p >= 2]
            price = rng.choice(divs)
            count = rng.randint(2, max(2, min(9, (value - 1) // price)))
            if count * price >= value or count == price or {count, price} & set(s.numbers):
                raise _Retry
            s.numbers += [count, price]
            s.say("{pron} buys {c} {thing}s for ${p} each.", c=count, p=price, thing=thing, **kw)
            cost = s.op("cost", s.var(f"{thing}s", count), "*", s.var("price", price))
            cur, value = s.op("money_left", cur, "-", cost), value - count * price
        else:  # split
            n = s.divisor(value)
            s.say("{pron} splits the money equally among {n} friends.", n=n, **kw)
            cur = s.op("share", cur, "/", s.var("friends", n))
            return cur, value // n, "How many dollars does each friend get?"
    who = name if s.other_named else pron
    return cur, value, rng.choice((f"How much money does {name} have now?",
                                   f"How many dollars does {who} have left?"))


def _scene_work(s: _Story, steps: int) -> tuple[str, int, str]:
    rng = s.rng
    place, goods = rng.choice(_PLACES)
    items = rng.choice(goods)
    kw = {"place": place, "items": items}
    if steps >= 2 and rng.random() < 0.5:
        a, b = s.number(4, 30), s.number(2, 7)
        s.say(("A {place} makes {a} {items} a day for {b} days.",
               "A {place} makes {a} {items} each day. It works {b} days."), a=a, b=b, **kw)
        s.skeleton.append("work:rate")
        cur = s.op(items, s.var("per_day", a), "*", s.var("days", b))
        value = a * b
    else:
        value = s.number(20, 150)
        s.say("A {place} has {v} {items}.", v=value, **kw)
        s.skeleton.append("work:start")
        cur = s.var(items, value)
    while s.ops < steps:
        left = steps - s.ops
        kinds = ["make", "sell"] if value > 3 else ["make"]
        if left == 1 and s.divisors(value):
            kinds.append("pack")
        kind = rng.choice(kinds)
        s.skeleton.append(kind)
        if kind == "make":
            n = s.number(3, 50)
            text, vname = rng.choice(
                (
                    ("It makes {n} more {items}.", "made"),
                    ("A truck brings {n} more {items}.", "delivered"),
                )
            )
            s.say(text, n=n, **kw)
            cur, value = s.op(f"{items}_total", cur, "+", s.var(vname, n)), value + n
        elif kind == "sell":
            n = s.number(1, min(50, value - 1))
            text, vname = rng.choice(
                (("It sells {n} {items}.", "sold"), ("{n} of the {items} are broken.", "broken"))
            )
            s.say(text, n=n, **kw)
            cur, value = s.op(f"{items}_left", cur, "-", s.var(vname, n)), value - n
        else:  # pack
            n = s.divisor(value)
            s.say("The {items} are packed in boxes of {n}.", n=n, **kw)
            cur = s.op("boxes", cur, "/", s.var("per_box", n))
            return cur, value // n, "How many boxes are filled?"
    question = rng.choice(
        (f"How many {items} does the {place} have now?", f"How many {items} are there now?")
    )
    return cur, value, question


def _scene_compare(s: _Story, steps: int) -> tuple[str, int, str]:
    rng = s.rng
    items = rng.choice(_ITEMS)
    name, _ = s.fresh(_NAMES)
    people = [name]
    value = s.number(6, 40)
    s.say("{name} has {v} {items}.", name=name, v=value, items=items)
    s.skeleton.append("compare:start")
    cur = first = s.var(name.lower(), value)
    first_value = value
    while s.ops < steps:
        left = steps - s.ops
        if left == 1 and len(people) > 1 and rng.random() < 0.4:
            s.skeleton.append("together")
            total = s.op("together", first, "+", cur)
            q = f"How many {items} do {people[0]} and {people[-1]} have together?"
            return total, first_value + value, q
        other, _ = s.fresh(_NAMES)
        kinds = ["more", "fewer", "times"] if value > 3 else ["more", "times"]
        if value % 2 == 0:
            kinds.append("half")
        kind = rng.choice(kinds)
        s.skeleton.append(kind)
        kw = {"other": other, "prev": people[-1], "items": items}
        if kind == "more":
            n = s.number(2, 30)
            s.say("{other} has {n} more {items} than {prev}.", n=n, **kw)
            cur, value = s.op(other.lower(), cur, "+", s.var("more", n)), value + n
        elif kind == "fewer":
            n = s.number(1, min(30, value - 1))
            s.say("{other} has {n} fewer {items} than {prev}.", n=n, **kw)
            cur, value = s.op(other.lower(), cur, "-", s.var("fewer", n)), value - n
        elif kind == "times":
            if value > 300:
                raise _Retry
            n = s.number(2, 5)
            word = {2: "twice", 3: "three times"}.get(n)
            if word:
                s.numbers.remove(n)
                s.say("{other} has {w} as many {items} as {prev}.", w=word, **kw)
                cur = s.op(other.lower(), cur, "*", str(n))
            else:
                s.say("{other} has {n} times as many {items} as {prev}.", n=n, **kw)
                cur = s.op(other.lower(), cur, "*", s.var("times", n))
            value *= n
        else:  # half
            s.say("{other} has half as many {items} as {prev}.", **kw)
            cur, value = s.op(other.lower(), cur, "/", "2"), value // 2
        people.append(other)
    return cur, value, f"How many {items} does {people[-1]} have?"


_MAX_WORDS = 40  # short enough for a tiny model's context
_SCENES = (_scene_collect, _scene_money, _scene_work, _scene_compare)


def _draw(rng: random.Random, max_steps: int) -> tuple[_Story, str, int]:
    """Draw one story until its numbers fit; returns it with the final variable and value."""
    while True:
        s = _Story(rng)
        steps = rng.randint(1, max_steps)
        scene = rng.choice(_SCENES)
        try:
            cur, value, question = scene(s, steps)
        except _Retry:
            continue
        s.sentences.append(question)
        if sum(len(t.split()) for t in s.sentences) <= _MAX_WORDS:
            return s, cur, value


def synthetic_problem(index: int, seed: int = 0, max_steps: int = 4) -> Problem:
    """The synthetic problem number ``index`` of stream ``seed`` (deterministic, any index).

    A GSM8K-style question of 1..``max_steps`` arithmetic operations (+, -, *, / with exact
    integer results) and its ReFT-style program, which assigns each number of the question to
    a variable, one operation per line, then ``result = ...`` / ``return result``.
    """
    return _synthetic(index, seed, max_steps)[0]


def _synthetic(index: int, seed: int, max_steps: int) -> tuple[Problem, str]:
    """(problem, split key): the key is the skeleton and the numbers, not names or wording."""
    if not 1 <= max_steps <= 4:
        raise ValueError(f"max_steps must be in 1..4, got {max_steps}")
    s, cur, value = _draw(random.Random(f"rlkd-synthetic/{seed}/{max_steps}/{index}"), max_steps)
    question = " ".join(s.sentences)
    body = [*s.lines, f"result = {cur}", "return result"]
    program = program_header(question) + "\n".join("    " + line for line in body)
    key = "|".join(s.skeleton) + "|" + ",".join(map(str, s.numbers))
    ident = f"synthetic/{seed}/{max_steps}/{index}"
    return Problem(ident, question, float(value), program), key


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 100


def synthetic_stream(split: str, seed: int = 0, max_steps: int = 4) -> Iterator[Problem]:
    """The problems of one split in index order, each skeleton and numbers at most once.

    Practically unlimited at ``max_steps >= 2``; with ``max_steps=1`` the train split holds
    about 16k problems, and asking for more raises a ValueError rather than looping."""
    if split not in _SPLIT_BUCKETS:
        raise ValueError(f"synthetic split must be one of {SYNTHETIC_SPLITS}, got {split!r}")
    lo, hi = _SPLIT_BUCKETS[split]
    seen: set[str] = set()
    index = misses = 0
    while misses < _MAX_MISSES:
        problem, key = _synthetic(index, seed, max_steps)
        index += 1
        if lo <= _bucket(key) < hi and key not in seen:
            seen.add(key)
            misses = 0
            yield problem
        else:
            misses += 1
    raise ValueError(
        f"synthetic {split!r} split with max_steps={max_steps} ran out of new problems after "
        f"{len(seen)}: ask for fewer or raise max_steps"
    )


def synthetic_split(
    split: str, size: int, seed: int = 0, max_steps: int = 4, labeled: bool | None = None
) -> list[Problem]:
    """``size`` synthetic problems of ``split`` (``train``, ``unlabeled`` or ``test``).

    The splits never share a problem (same skeleton and numbers), for any seeds. ``unlabeled``
    problems come without their program (no supervision) but keep their answer, so a run can
    report how well its judge agrees with execution; the trainer never puts an unlabeled
    problem's answer into a reward. ``labeled=True`` keeps the program too, ``labeled=False``
    drops both.
    """
    stream = synthetic_stream(split, seed, max_steps)
    out = [next(stream) for _ in range(size)]
    if labeled is False:
        out = [Problem(p.id, p.question) for p in out]
    elif labeled is None and split == "unlabeled":
        out = [Problem(p.id, p.question, p.answer) for p in out]
    return out



def generate(split: str, size: int | None, seed: int, config: str | None,
             fraction: float = 1.0) -> list[Problem]:
    """The ``synthetic`` data set of the registry: ``size`` problems of ``split`` (default
    :data:`SYNTHETIC_SIZES`), scaled by ``fraction``; ``config`` is the most operations per
    problem (``"1"``..``"4"``, default 4)."""
    max_steps = 4
    if config:
        if not config.isdigit():
            raise ValueError(f"synthetic config is max_steps (1-4), got {config!r}")
        max_steps = int(config)
    n = SYNTHETIC_SIZES.get(split, 0) if size is None else size
    return synthetic_split(split, max(1, round(n * fraction)), seed, max_steps)
