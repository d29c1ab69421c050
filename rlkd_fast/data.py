"""Math word-problem data: loaders for the paper's data sets and a synthetic generator.

``load_split(name, source=None, split="test", fraction=1.0, seed=0)`` returns a list of
:class:`Problem` for the names in :data:`DATASETS` and ``synthetic``. ``source`` is a hub id
(read with ``datasets.load_dataset``) or a local jsonl/json/parquet file or a directory of them;
both feed the same row parser. Rows whose answer cannot be parsed are skipped, counted
(``result.skipped``) and reported with a warning; a missing file or field is an error.

The synthetic generator: :func:`synthetic_problem` (one problem per ``(seed, index)``) and
:func:`synthetic_split` (disjoint ``train`` / ``unlabeled`` / ``test`` splits of any size).
"""

from __future__ import annotations

import json
import math
import random
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkd_fast.hub import (
    HubUnreachable,
    is_connection_error,
    is_local_path,
    network_error,
    offline_mode,
)

__all__ = [
    "DATASETS",
    "SYNTHETIC_SIZES",
    "SYNTHETIC_SPLITS",
    "Problem",
    "Split",
    "load_split",
    "parse_answer",
    "synthetic_problem",
    "synthetic_split",
    "synthetic_stream",
    "to_records",
]


@dataclass(frozen=True)
class Problem:
    """One math word problem.

    Attributes:
        id: stable identifier (the data set's own id where it has one).
        question: the question text.
        answer: the gold numeric answer; None for unlabeled problems.
        program: a ReFT-style PoT program (``def solution(): ...``) where the data has one.
    """

    id: str
    question: str
    answer: float | None = None
    program: str | None = None


class Split(list):
    """A list of :class:`Problem` that also reports what the loader left out.

    Attributes:
        name: the data set name; source: where it came from.
        skipped: rows dropped because their answer could not be parsed (warned about).
        dropped: rows removed on purpose (GSM-Plus items whose answer is "None").
    """

    def __init__(
        self,
        problems: Iterable[Problem] = (),
        name: str = "",
        source: str = "",
        skipped: int = 0,
        dropped: int = 0,
    ):
        super().__init__(problems)
        self.name, self.source, self.skipped, self.dropped = name, source, skipped, dropped


# ----------------------------------------------------------------------------- answers

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def parse_answer(value: Any) -> float | None:
    """Parse a gold answer into a float, or None when it is not a single number.

    Accepts numbers and strings such as ``"1,234"``, ``"$5"``, ``"3.50"``, ``"-2"``, ``"50%"``,
    ``"3/4"`` and GSM8K's ``"... #### 72"`` (the text after the last ``####``).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    text = value.rsplit("####", 1)[-1] if "####" in value else value
    text = re.sub(r"(?<=\d),(?=\d{3}(\D|$))", "", text.strip())  # thousands separators
    text = text.replace("$", "").replace("€", "").replace("£", "").strip().rstrip(".%").strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    num, slash, den = text.partition("/")
    if slash and _NUMBER.fullmatch(num.strip()) and _NUMBER.fullmatch(den.strip()):
        d = float(den)
        return float(num) / d if d else None
    return None


# ----------------------------------------------------------------------------- reading rows

_DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_file(path: Path) -> list[dict]:
    """Rows of one jsonl / json / parquet file; every row must be a JSON object (ValueError
    naming the file and the row otherwise, and for text that is not UTF-8)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # many ".json" files are really JSON lines
            data = None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if isinstance(data, list):
            for i, row in enumerate(data):
                _check_record(row, f"{path}: record {i}")
            return data
        if data is not None:
            raise ValueError(f"{path}: expected a list of records or JSON lines")
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a JSON record ({e})") from None
            rows.append(_check_record(row, f"{path}:{lineno}"))
    return rows


def _check_record(row: Any, where: str) -> dict:
    if not isinstance(row, dict):
        kind = {str: "a string", list: "an array", bool: "a boolean", type(None): "null"}.get(
            type(row), "a number")
        raise ValueError(f"{where}: expected a JSON object (a record with fields), got {kind}")
    return row


def _has_token(text: str, token: str) -> bool:
    """``token`` appears in ``text`` delimited by non-alphanumerics (``test`` in ``gsm8k_test``)."""
    pattern = rf"(^|[^a-z0-9]){re.escape(token.lower())}([^a-z0-9]|$)"
    return re.search(pattern, text.lower()) is not None


@dataclass(frozen=True)
class _FileMatch:
    """How a directory's files are picked: by tokens in their relative paths."""

    split: str
    key: str | None = None  # a config token (``p1``, ``svamp``): preferred where files have it
    strict: bool = False  # the key was asked for by name: no file with it is an error
    aliases: tuple[str, ...] = ()  # other tokens that mean ``split``


def _files_for(root: Path, match: _FileMatch) -> list[Path]:
    """The data files of one split (and config) inside the directory ``root``."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _DATA_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .jsonl/.json/.parquet files in directory {root}")
    rel = {p: str(p.relative_to(root)) for p in files}
    names = ", ".join(rel.values())
    if match.key:
        keyed = [p for p in files if _has_token(rel[p], match.key)]
        if match.strict and not keyed:
            raise FileNotFoundError(f"no file for config {match.key!r} in {root} ({names})")
        files = keyed or files
    tokens = (match.split, *match.aliases)
    by_split = [p for p in files if any(_has_token(rel[p], t) for t in tokens)]
    if by_split:
        return by_split
    if len(files) == 1:
        return files
    raise FileNotFoundError(f"no file for split {match.split!r} in {root} ({names})")


def _looks_like_path(source: str) -> bool:
    return is_local_path(source) or source.endswith(_DATA_SUFFIXES)


def _read_rows(source: str, config: str | None, match: _FileMatch, option: str) -> list[dict]:
    """Rows of one split from a local file, a directory (files picked by ``match``) or a hub
    data set (``config``, ``match.split``); ``option`` is how the user passes a local source,
    for the error messages."""
    split = match.split
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path)
    if path.is_dir():
        return [row for f in _files_for(path, match) for row in _read_file(f)]
    if _looks_like_path(source):
        raise FileNotFoundError(f"no such data file or directory: {source}")
    return _read_hub(source, config, split, option)


def _read_hub(source: str, config: str | None, split: str, option: str) -> list[dict]:
    """Rows of a hub data set; an unreachable hub is reported at once, not after the hub
    client's retries."""
    local = f"pass a local path (a file or directory) with {option}"
    offline = offline_mode()
    reason = None if offline else network_error(source, "dataset")
    if reason:
        raise HubUnreachable(f"cannot reach the Hugging Face hub for data set {source!r} "
                             f"({reason}); {local} (or set HF_HUB_OFFLINE=1 to use a copy in "
                             "the local cache)")
    import datasets

    try:
        ds = datasets.load_dataset(source, config, split=split)
    except Exception as e:  # offline, unknown id, bad config: say which
        if offline and is_connection_error(e):
            raise HubUnreachable(f"HF_HUB_OFFLINE is set and data set {source!r} (config="
                                 f"{config!r}) is not in the local cache; {local}") from None
        raise RuntimeError(
            f"could not load hub data set {source!r} (config={config!r}, split={split!r}): {e}. "
            f"To work offline, {local}."
        ) from e
    return list(ds)


# ----------------------------------------------------------------------------- schemas


def _field(row: dict, key: str, name: str, index: int) -> Any:
    """``row[key]``, or an error naming the field, the data set and the row."""
    if key not in row:
        raise KeyError(
            f"{name}: row {index} has no field {key!r} (fields: {', '.join(sorted(row))})"
        )
    return row[key]


def _question(row: dict, key: str, name: str, index: int) -> str | None:
    """The question text, or None (a skipped row) when it is empty or not text."""
    q = _field(row, key, name, index)
    return q if isinstance(q, str) and q.strip() else None


_NO_ANSWER = object()  # a row removed on purpose (not a parse failure)
Parser = Callable[[dict, str, int], "Problem | object | None"]


def _gsm8k_row(row: dict, name: str, i: int) -> Problem | None:
    answer = parse_answer(_field(row, "answer", name, i))
    q = _question(row, "question", name, i)
    if answer is None or q is None:
        return None
    return Problem(str(row.get("id", f"{name}/{i}")), q, answer)


def _reft_row(row: dict, name: str, i: int) -> Problem | None:
    if "item_id" not in row and "Body" in row:  # SVAMP in its original schema (hub)
        return _svamp_hub_row(row, name, i)
    q = _question(row, "question", name, i)
    answer = parse_answer(_field(row, "answer_value", name, i))
    if answer is None or q is None:
        return None
    cot = row.get("answer_cot")
    program = cot if isinstance(cot, str) and cot.lstrip().startswith("def ") else None
    return Problem(str(row.get("item_id", f"{name}/{i}")), q, answer, program)


def _svamp_hub_row(row: dict, name: str, i: int) -> Problem | None:
    body, ask = _question(row, "Body", name, i), _question(row, "Question", name, i)
    answer = parse_answer(_field(row, "Answer", name, i))
    if answer is None or ask is None:
        return None
    q = f"{body.strip()} {ask.strip()}" if body else ask.strip()
    return Problem(str(row.get("ID", f"{name}/{i}")), q, answer)


def _gsm_plus_row(row: dict, name: str, i: int) -> Problem | object | None:
    raw = _field(row, "answer", name, i)
    if isinstance(raw, str) and raw.strip() == "None":
        return _NO_ANSWER
    return _gsm8k_row(row, name, i)


def _gsm_symbolic_row(row: dict, name: str, i: int) -> Problem | None:
    answer = parse_answer(_field(row, "answer", name, i))
    q = _question(row, "question", name, i)
    if answer is None or q is None:
        return None
    ident = f"{name}/{row['id']}/{row.get('instance', 0)}" if "id" in row else f"{name}/{i}"
    return Problem(ident, q, answer)


def _question_only_row(row: dict, name: str, i: int) -> Problem | None:
    q = _question(row, "question", name, i)
    ident = row.get("id", row.get("item_id", f"{name}/{i}"))
    return None if q is None else Problem(str(ident), q)


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and parse one data set: default hub id/config, split file aliases, parser."""

    hub: str | None
    config: str | None  # default config (hub and file names)
    parse: Parser
    configs: tuple[str, ...] = ()  # the named configs, if the data set has several
    file_key: str | None = None  # name token of its files in a shared directory (ReFT's data/)
    train_aliases: tuple[str, ...] = ()  # file-name tokens that also mean "train"


#: Known data sets. Hub ids from PAPER_NOTES; ``reft``/``svamp`` read ReFT's json files
#: (``source`` = a file or ReFT's ``data/`` directory; config picks ``gsm8k``/``svamp`` files).
DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("openai/gsm8k", "main", _gsm8k_row),
    "reft": DatasetSpec(None, "gsm8k", _reft_row, ("gsm8k", "svamp"), None, ("python_sdp",)),
    "svamp": DatasetSpec("ChilleD/SVAMP", None, _reft_row, (), "svamp", ("python_sdp",)),
    "gsm_plus": DatasetSpec("qintongli/GSM-Plus", None, _gsm_plus_row),
    "gsm_symbolic": DatasetSpec(
        "apple/GSM-Symbolic", "main", _gsm_symbolic_row, ("main", "p1", "p2")
    ),
    "gsm8k_aug": DatasetSpec("whynlp/gsm8k-aug", None, _question_only_row),
}


def _subset(items: list, fraction: float, seed: int) -> list:
    """A deterministic ``fraction`` of ``items`` in their original order; for one seed the
    subsets are nested (the 5% subset lies inside the 25% one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0 or not items:
        return items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    keep = sorted(order[: max(1, round(fraction * len(items)))])
    return [items[i] for i in keep]


def load_split(
    name: str,
    source: str | None = None,
    split: str = "test",
    fraction: float = 1.0,
    seed: int = 0,
    *,
    config: str | None = None,
    size: int | None = None,
    max_steps: int = 4,
    source_option: str = "source=",
) -> Split:
    """Load one split of a data set as a :class:`Split` (a list of :class:`Problem`).

    Args:
        name: ``gsm8k``, ``reft`` (``reft:svamp`` for ReFT's SVAMP files), ``svamp``,
            ``gsm_plus``, ``gsm_symbolic`` (``"gsm_symbolic:p1"`` or ``config="p1"``; configs
            main/p1/p2), ``gsm8k_aug`` (questions only) or ``synthetic`` (``synthetic:2`` sets
            ``max_steps`` to 2).
        source: hub id or local jsonl/json/parquet file or directory; None = the default hub id.
        split: split name (``train``/``test``/...; synthetic: ``train``/``unlabeled``/``test``).
        fraction: keep this share of the rows, chosen deterministically from ``seed``.
        seed: seed of the ``fraction`` subset (and of the synthetic generator).
        config: data set configuration (overrides the one after ``:`` in ``name``).
        size, max_steps: synthetic only: number of problems (default per split) and the most
            arithmetic operations per problem (1-4).
        source_option: how the caller's user passes ``source`` (``--source``,
            ``eval_source=``, ...), named in the errors that ask for one.
    Returns:
        the problems; ``.skipped`` counts rows whose answer did not parse (warned about),
        ``.dropped`` the rows removed on purpose (GSM-Plus "None" answers).
    Raises:
        ValueError: an unknown name or config, a row that is not a JSON object, a file that is
            not UTF-8 (naming the file and row); FileNotFoundError: a missing local source;
        KeyError: a row without a field its schema needs; HubUnreachable (a RuntimeError): no
            network or ``HF_HUB_OFFLINE`` without a cached copy; RuntimeError: other hub errors.
    """
    base, _, suffix = name.partition(":")
    config = config or suffix or None
    if base == "synthetic":
        if source is not None:
            raise ValueError(f"synthetic data is generated: {source_option} must be unset")
        if config:
            if not config.isdigit():
                raise ValueError(f"synthetic config is max_steps (1-4), got {config!r}")
            max_steps = int(config)
        n = SYNTHETIC_SIZES.get(split, 0) if size is None else size
        problems = synthetic_split(split, max(1, round(n * fraction)), seed, max_steps)
        return Split(problems, name=name, source="synthetic")
    if base not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join([*DATASETS, 'synthetic'])}")
    spec = DATASETS[base]
    if config and spec.configs and config not in spec.configs:
        raise ValueError(f"{base}: unknown config {config!r}; known: {', '.join(spec.configs)}")
    asked, config = config, config or spec.config
    if source is None:
        if spec.hub is None:
            raise ValueError(f"{base}: no default source; pass a file or a directory with "
                             f"{source_option}")
        source = spec.hub
    aliases = spec.train_aliases if split == "train" else ()
    match = _FileMatch(split, config or spec.file_key, asked is not None, aliases)
    rows = _read_rows(source, config, match, source_option)
    label = f"{base}:{config}/{split}" if config and spec.configs else f"{base}/{split}"
    problems, bad, dropped = [], [], 0
    for i, row in enumerate(rows):
        p = spec.parse(row, label, i)
        if p is _NO_ANSWER:
            dropped += 1
        elif p is None:
            bad.append(i)
        else:
            problems.append(p)
    if bad:
        warnings.warn(
            f"{name} ({source}, {split}): skipped {len(bad)} of {len(rows)} rows whose answer "
            f"is not a number or whose question is empty (first: row {bad[0]})",
            stacklevel=2,
        )
    return Split(_subset(problems, fraction, seed), name, source, len(bad), dropped)


# ----------------------------------------------------------------------------- synthetic
#
# A problem is a story: a start sentence sets a quantity, each event sentence applies one or
# two arithmetic operations to it, and a question asks for the final value. Four scenes
# (collecting items, money, a workplace, comparing people) each bring their own wordings, and
# names and nouns are drawn independently, so one skeleton (scene + operations) appears with
# many numbers and wordings. The program copies every number of the question into a variable
# and spells each operation on its own line, in ReFT's format.

SYNTHETIC_SPLITS = ("train", "unlabeled", "test")
#: Default sizes of ``load_split("synthetic", split=...)``.
SYNTHETIC_SIZES = {"train": 4000, "unlabeled": 4000, "test": 500}
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

    def say(self, text: str, **kw: Any) -> None:
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
        s.say(
            rng.choice(
                (
                    "{name} has {a} {boxes} of {items} with {b} in each {box}.",
                    "{name} buys {a} {boxes} of {items}. Each {box} holds {b} {items}.",
                )
            ),
            a=a,
            b=b,
            boxes=boxes,
            box=box,
            **kw,
        )
        s.skeleton.append("collect:boxes")
        cur = s.op(items, s.var(boxes, a), "*", s.var(f"{items}_per_{box}", b))
        value = a * b
    else:
        value = s.number(8, 90)
        s.say(
            rng.choice(
                (
                    "{name} has {v} {items}.",
                    "{name} collected {v} {items}.",
                    "There are {v} {items} in {poss} room.",
                )
            ),
            v=value,
            **kw,
        )
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
            s.say(
                rng.choice(
                    (
                        "{pron} gives half of them to {friend}.",
                        "{pron} loses half of {poss} {items}.",
                    )
                ),
                **kw,
            )
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
    question = rng.choice(
        (
            f"How many {items} does {name} have now?",
            f"How many {items} does {name if s.other_named else pron} have in the end?",
        )
    )
    return cur, value, question


def _scene_money(s: _Story, steps: int) -> tuple[str, int, str]:
    rng = s.rng
    name, pron = s.fresh(_NAMES)
    kw = {"name": name, "pron": pron, "obj": _OBJ[pron]}
    if steps >= 2 and rng.random() < 0.35:
        a, b = s.number(5, 20), s.number(2, 9)
        s.say(
            rng.choice(
                (
                    "{name} earns ${a} a day for {b} days.",
                    "{name} works {b} days and earns ${a} each day.",
                )
            ),
            a=a,
            b=b,
            **kw,
        )
        s.skeleton.append("money:wage")
        cur, value = s.op("money", s.var("daily_pay", a), "*", s.var("days", b)), a * b
    else:
        value = s.number(20, 99)
        s.say(rng.choice(("{name} has ${v}.", "{name} saved ${v}.")), v=value, **kw)
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
            s.say(
                rng.choice(("{pron} spends ${n} on a {thing}.", "{pron} pays ${n} for a {thing}.")),
                n=n,
                thing=thing,
                **kw,
            )
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
    question = rng.choice(
        (
            f"How much money does {name} have now?",
            f"How many dollars does {name if s.other_named else pron} have left?",
        )
    )
    return cur, value, question


def _scene_work(s: _Story, steps: int) -> tuple[str, int, str]:
    rng = s.rng
    place, goods = rng.choice(_PLACES)
    items = rng.choice(goods)
    kw = {"place": place, "items": items}
    if steps >= 2 and rng.random() < 0.5:
        a, b = s.number(4, 30), s.number(2, 7)
        s.say(
            rng.choice(
                (
                    "A {place} makes {a} {items} a day for {b} days.",
                    "A {place} makes {a} {items} each day. It works {b} days.",
                )
            ),
            a=a,
            b=b,
            **kw,
        )
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
    from rlkd_fast.prompts import program_header

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
    import hashlib

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
    problems come without answer and program unless ``labeled=True``.
    """
    labeled = split != "unlabeled" if labeled is None else labeled
    stream = synthetic_stream(split, seed, max_steps)
    out = [next(stream) for _ in range(size)]
    if not labeled:
        out = [Problem(p.id, p.question) for p in out]
    return out


# ----------------------------------------------------------------------------- export and CLI


def to_records(problems: Iterable[Problem]) -> list[dict]:
    """Problems as ReFT-style records (``item_id``, ``question``, ``answer_cot``,
    ``answer_value``), which ``load_split("reft", path)`` reads back; absent fields are left
    out (so unlabeled questions read back with ``gsm8k_aug``)."""
    records = []
    for p in problems:
        rec = {"item_id": p.id, "question": p.question}
        if p.program is not None:
            rec["answer_cot"] = p.program
        if p.answer is not None:
            rec["answer_value"] = str(p.answer)
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> None:
    """``python -m rlkd_fast.data NAME [--split S] [--out FILE.jsonl]``: load a split, report
    its size and skipped rows, show a few problems, optionally write it as JSON lines."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rlkd_fast.data", description=main.__doc__)
    ap.add_argument("name", help="data set name, e.g. gsm8k, gsm_symbolic:p1, synthetic:2")
    ap.add_argument("--source", help="hub id or local file/directory (default: the hub id)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, help="synthetic: number of problems")
    ap.add_argument("--show", type=int, default=2, help="problems to print")
    ap.add_argument("--out", help="write the split as ReFT-style JSON lines here")
    args = ap.parse_args(argv)
    try:
        problems = load_split(args.name, args.source, args.split, args.fraction, args.seed,
                              size=args.size, source_option="--source PATH")
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        ap.exit(1, f"{ap.prog}: error: {message}\n")
    counts = f"{len(problems)} problems, {problems.skipped} skipped, {problems.dropped} dropped"
    print(f"{args.name}/{args.split}: {counts}")
    for p in problems[: args.show]:
        print(f"\n[{p.id}] answer={p.answer}\n{p.program or p.question}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in to_records(problems))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
