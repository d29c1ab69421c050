"""The embedded judge shipped with the package, found and verified before use.

``judge=tiny`` (the default run's judge) is the directory ``rlkd_fast/demo/judge/``: weights,
tokenizer and ``build.json``, written by ``python -m rlkd_fast.demo.build_judge``. The record
holds each file's SHA-256; a missing or altered file is an error that names it and the command
that rebuilds the judge, never a silently different judge.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rlkd_fast.hub import ModelFilesError

EMBEDDED_JUDGE_DIR = Path(__file__).with_name("judge")
BUILD_RECORD = "build.json"
REBUILD_COMMAND = "python -m rlkd_fast.demo.build_judge"


class JudgeArtifactError(ModelFilesError):
    """The embedded judge is missing or does not match its build record."""


def _fail(path: Path, why: str) -> JudgeArtifactError:
    directory = path.parent
    out = "" if directory == EMBEDDED_JUDGE_DIR else f" --out {directory}"
    return JudgeArtifactError(f"the judge file {path} {why}; rebuild it with: "
                              f"{REBUILD_COMMAND}{out} (about 20 minutes on 2 CPU cores)")


def build_record(directory: str | Path | None = None) -> dict:
    """The build record (``build.json``) of the judge in ``directory`` (default: the embedded
    one). Raises :class:`JudgeArtifactError`."""
    path = Path(directory or EMBEDDED_JUDGE_DIR) / BUILD_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "is missing") from None
    except (OSError, ValueError) as err:
        raise _fail(path, f"cannot be read ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise _fail(path, "has no 'files' table")
    return record


def embedded_judge_dir(directory: str | Path | None = None) -> Path:
    """``directory`` (default: the embedded judge's) once every file its build record lists is
    there with the recorded SHA-256. Raises :class:`JudgeArtifactError` naming the first missing
    or altered file."""
    directory = Path(directory or EMBEDDED_JUDGE_DIR)
    for name, digest in build_record(directory)["files"].items():
        path = directory / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _fail(path, "is missing") from None
        except OSError as err:
            raise _fail(path, f"cannot be read ({err})") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise _fail(path, "is corrupt (its SHA-256 differs from build.json's)")
    return directory
