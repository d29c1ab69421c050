"""One math word problem (:class:`Problem`), a loaded split of them (:class:`Split`), gold answers
parsed into numbers, and problems written back as ReFT-style records."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


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
