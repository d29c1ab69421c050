"""Reading one split's rows and parsing them into problems.

Rows come from a local jsonl / json / parquet file, a directory of them (files picked by the
split's and the config's names) or a hub data set (``datasets.load_dataset``); every source feeds
the same row parser of the data set's schema. A missing file or field is an error naming it; a
row whose answer is not a number is skipped (the registry counts and reports it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkd_fast.data.problem import Problem, parse_answer
from rlkd_fast.hub import (
    HubUnreachable,
    is_connection_error,
    is_local_path,
    network_error,
    offline_mode,
)

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
class FileMatch:
    """How a directory's files are picked: by tokens in their relative paths."""

    split: str
    key: str | None = None  # a config token (``p1``, ``svamp``): preferred where files have it
    strict: bool = False  # the key was asked for by name: no file with it is an error
    aliases: tuple[str, ...] = ()  # other tokens that mean ``split``


def _files_for(root: Path, match: FileMatch) -> list[Path]:
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


def read_rows(source: str, config: str | None, match: FileMatch, option: str) -> list[dict]:
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


# --------------------------------------------------------------------------------------------------
# Row schemas: one parser per data set layout (None = a row to skip)
# --------------------------------------------------------------------------------------------------
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


DROPPED = object()  # a row removed on purpose (not a parse failure)
Parser = Callable[[dict, str, int], "Problem | object | None"]


def gsm8k_row(row: dict, name: str, i: int) -> Problem | None:
    answer = parse_answer(_field(row, "answer", name, i))
    q = _question(row, "question", name, i)
    if answer is None or q is None:
        return None
    return Problem(str(row.get("id", f"{name}/{i}")), q, answer)


def reft_row(row: dict, name: str, i: int) -> Problem | None:
    if "item_id" not in row and "Body" in row:  # SVAMP in its original schema (hub)
        return svamp_hub_row(row, name, i)
    q = _question(row, "question", name, i)
    answer = parse_answer(_field(row, "answer_value", name, i))
    if answer is None or q is None:
        return None
    cot = row.get("answer_cot")
    program = cot if isinstance(cot, str) and cot.lstrip().startswith("def ") else None
    return Problem(str(row.get("item_id", f"{name}/{i}")), q, answer, program)


def svamp_hub_row(row: dict, name: str, i: int) -> Problem | None:
    body, ask = _question(row, "Body", name, i), _question(row, "Question", name, i)
    answer = parse_answer(_field(row, "Answer", name, i))
    if answer is None or ask is None:
        return None
    q = f"{body.strip()} {ask.strip()}" if body else ask.strip()
    return Problem(str(row.get("ID", f"{name}/{i}")), q, answer)


def gsm_plus_row(row: dict, name: str, i: int) -> Problem | object | None:
    raw = _field(row, "answer", name, i)
    if isinstance(raw, str) and raw.strip() == "None":
        return DROPPED
    return gsm8k_row(row, name, i)


def gsm_symbolic_row(row: dict, name: str, i: int) -> Problem | None:
    answer = parse_answer(_field(row, "answer", name, i))
    q = _question(row, "question", name, i)
    if answer is None or q is None:
        return None
    ident = f"{name}/{row['id']}/{row.get('instance', 0)}" if "id" in row else f"{name}/{i}"
    return Problem(ident, q, answer)


def question_only_row(row: dict, name: str, i: int) -> Problem | None:
    q = _question(row, "question", name, i)
    ident = row.get("id", row.get("item_id", f"{name}/{i}"))
    return None if q is None else Problem(str(ident), q)
