"""A generator of GSM8K-style program-of-thought programs, for executor benchmarks and tests.

Programs look like what a PoT student writes: ``def solution():`` with the question as a
docstring, a few named quantities, arithmetic (sometimes ``math``, a loop, a helper list or a
``sympy`` equation), ``result = ...`` and ``return result``. The mix also holds the failures
an RL batch contains: exceptions (~3%), non-numeric returns (~1%) and, by default, 1% that
never finish (a ``while`` loop whose condition stays true).
"""

from __future__ import annotations

import random

NAMES = ("Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Mark", "Alexis", "Tina", "Ken")
ITEMS = ("clips", "apples", "books", "stickers", "marbles", "cookies", "pencils", "eggs")


def _q(rng: random.Random) -> tuple[str, str]:
    return rng.choice(NAMES), rng.choice(ITEMS)


def _arith(rng: random.Random) -> str:
    name, item = _q(rng)
    a, b, c = rng.randint(2, 500), rng.randint(2, 60), rng.randint(2, 9)
    return f'''def solution():
    """{name} had {a} {item}, bought {b} more each day for {c} days and gave away half.
    How many {item} does {name} have now?"""
    {item}_initial = {a}
    {item}_per_day = {b}
    num_days = {c}
    {item}_bought = {item}_per_day * num_days
    {item}_total = {item}_initial + {item}_bought
    {item}_left = {item}_total / 2
    result = {item}_left
    return result
'''


def _money(rng: random.Random) -> str:
    name, item = _q(rng)
    price, n, pct = round(rng.uniform(0.5, 40), 2), rng.randint(2, 30), rng.choice((5, 10, 15, 20))
    return f'''def solution():
    """{name} buys {n} {item} at ${price} each with a {pct}% discount. How much does {name} pay?"""
    price_per_item = {price}
    num_items = {n}
    discount_percent = {pct}
    total_before = price_per_item * num_items
    discount = total_before * discount_percent / 100
    total_paid = total_before - discount
    result = round(total_paid, 2)
    return result
'''


def _math_fn(rng: random.Random) -> str:
    name, item = _q(rng)
    total, box = rng.randint(20, 900), rng.randint(3, 24)
    return f'''def solution():
    """{name} packs {total} {item} into boxes of {box}. How many boxes are needed?"""
    total_{item} = {total}
    per_box = {box}
    boxes_needed = math.ceil(total_{item} / per_box)
    result = boxes_needed
    return result
'''


def _loop(rng: random.Random) -> str:
    name, _ = _q(rng)
    start, rate, weeks = rng.randint(1, 50), rng.randint(1, 5), rng.randint(3, 12)
    return f'''def solution():
    """{name} saves ${start} in week one and ${rate} more each week than the week before.
    How much has {name} saved after {weeks} weeks?"""
    savings = 0
    weekly = {start}
    for week in range({weeks}):
        savings += weekly
        weekly += {rate}
    result = savings
    return result
'''


def _listy(rng: random.Random) -> str:
    name, item = _q(rng)
    xs = [rng.randint(1, 90) for _ in range(rng.randint(3, 7))]
    return f'''def solution():
    """{name} counted {item} on each shelf: {xs}. What is the average per shelf?"""
    counts = {xs}
    total = sum(counts)
    average = total / len(counts)
    result = average
    return result
'''


def _sympy(rng: random.Random) -> str:
    name, item = _q(rng)
    k, extra = rng.randint(2, 6), rng.randint(1, 40)
    total = rng.randint(50, 400)
    return f'''def solution():
    """{name} has {k} times as many {item} as Sam plus {extra}. Together they have {total}.
    How many does Sam have?"""
    x = sympy.symbols('x')
    equation = sympy.Eq(x + {k} * x + {extra}, {total})
    sam = sympy.solve(equation, x)[0]
    result = float(sam)
    return result
'''


def _error(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return 'def solution():\n    """Divide."""\n    a = 5\n    b = 0\n    return a / b\n'
    if kind == 1:
        return 'def solution():\n    """Typo."""\n    total = 3\n    return totl * 2\n'
    return 'def solution():\n    """Index."""\n    xs = [1, 2]\n    return xs[5]\n'


def _nonnumeric(rng: random.Random) -> str:
    return 'def solution():\n    """Text."""\n    answer = "twelve"\n    return answer\n'


def _timeout(rng: random.Random) -> str:
    n = rng.randint(2, 9)
    return f'''def solution():
    """A loop whose condition never turns false."""
    count = {n}
    while count > 0:
        count += 1
    result = count
    return result
'''


_ORDINARY = ((_arith, 30), (_money, 20), (_math_fn, 15), (_loop, 15), (_listy, 15), (_sympy, 1))


def make_corpus(n: int, seed: int = 0, timeout_frac: float = 0.01, error_frac: float = 0.03,
                nonnumeric_frac: float = 0.01) -> list[str]:
    """``n`` programs: ``timeout_frac`` never finish, ``error_frac`` raise, ``nonnumeric_frac``
    return a string, the rest compute a number (about 1 in 100 of those with sympy.solve)."""
    rng = random.Random(seed)
    fns, weights = zip(*_ORDINARY)
    out = []
    n_timeout, n_error, n_text = (round(n * f) for f in (timeout_frac, error_frac,
                                                          nonnumeric_frac))
    out += [_timeout(rng) for _ in range(n_timeout)]
    out += [_error(rng) for _ in range(n_error)]
    out += [_nonnumeric(rng) for _ in range(n_text)]
    while len(out) < n:
        out.append(rng.choices(fns, weights)[0](rng))
    rng.shuffle(out)
    return out[:n]
