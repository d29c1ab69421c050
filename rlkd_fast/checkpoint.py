"""Atomic, resumable checkpoints.

A checkpoint is a directory ``ckpt-<step>`` holding the policy in Hugging Face format (so the
evaluation and any other tool can load it), ``trainer_state.pt`` (optimizer, RNG states,
counters, data positions) and, written last, the ``COMPLETE`` manifest. It is written by
``rlkd_fast.atomic.write_dir`` (a temporary name, flushed, renamed into place) and only then does
the ``latest`` pointer file move to it (also by rename): a run killed at any moment leaves a
complete checkpoint that ``latest_checkpoint`` finds, at most the steps since the last one lost.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkd_fast import atomic
from rlkd_fast.prompts import save_prompt_settings

LATEST = "latest"
STATE = "trainer_state.pt"


def save_model(model, tokenizer, directory: str | Path) -> None:
    """A model and its tokenizer as one Hugging Face directory (``from_pretrained`` loads it)."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def save_atomic(model, tokenizer, path: str | Path) -> Path:
    """:func:`save_model` to ``path``, replacing what is there, such that a complete copy (the
    old or the new) exists at every moment (``rlkd_fast.atomic.write_dir``)."""
    return atomic.write_dir(path, lambda tmp: save_model(model, tokenizer, tmp), replace=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | Path, step: int, policy, trainer_state: dict[str, Any],
                    tokenizer=None, keep: int = 2,
                    prompt_settings: dict[str, Any] | None = None) -> Path:
    """Write ``ckpt-<step>`` atomically, point ``latest`` at it, keep the newest ``keep``.

    ``ckpt-<step>/policy`` is a complete Hugging Face directory (with ``tokenizer``), so
    ``python -m rlkd_fast.evaluate --model .../policy`` works on any checkpoint; with
    ``prompt_settings`` (:func:`rlkd_fast.prompts.save_prompt_settings`'s arguments) it also says
    how the policy was prompted, and evaluation prompts it the same way. Re-saving a step
    that exists replaces it without a moment where no complete copy exists (see
    ``rlkd_fast.atomic``); half-written copies left by killed runs are removed first.

    Raises ``OSError(ENOSPC)`` naming the checkpoint when the disk is full (the partial copy is
    removed and ``latest`` still names the previous checkpoint).
    """
    root = Path(output_dir)
    final = root / f"ckpt-{step:07d}"

    def build(tmp: Path) -> None:
        policy.save(tmp / "policy")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "policy")
        if prompt_settings is not None:
            save_prompt_settings(tmp / "policy", **prompt_settings)
        # Through a file object: a full disk then raises OSError(ENOSPC), not torch's
        # "unexpected pos".
        with open(tmp / STATE, "wb") as f:
            torch.save(trainer_state | {"step": step, "rng": rng_state()}, f)

    atomic.write_dir(final, build, replace=True)
    atomic.write_text(root / LATEST, final.name)  # the commit point
    others = [p for p in checkpoints(root) if p != final]  # never the one just written
    for old in others[:max(0, len(others) - (keep - 1))]:
        atomic.remove_dir(old)
    return final


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The ``ckpt-*`` directories of a run, oldest step first (complete or not)."""
    return sorted(p for p in Path(output_dir).glob("ckpt-*") if p.is_dir())


def latest_checkpoint(output_dir: str | Path, repair: bool = True) -> Path | None:
    """The complete checkpoint to resume from, or None when the run has none.

    That is the one ``latest`` names; if a kill interrupted its re-save, its complete copy is
    first moved back into place, and what killed writers left half-written is removed (unless
    ``repair=False``: then nothing on disk changes, for the other ranks of a data-parallel run).
    When ``latest`` names a missing or incomplete checkpoint (or is itself missing), the newest
    complete one is used instead, with a warning."""
    root = Path(output_dir)
    pointer = root / LATEST
    named = root / pointer.read_text().strip() if pointer.exists() else None
    if repair:
        if named is not None:
            atomic.recover(named)
        atomic.remove_stale(root)  # what killed writers left, once nothing can be recovered
    if named is not None and atomic.is_complete(named):
        return named
    complete = [p for p in checkpoints(root) if atomic.is_complete(p)]
    if named is None and not complete:
        return None
    said = f"{pointer} names {named.name}, which is missing or incomplete" if named is not None \
        else f"{pointer} is missing"
    if not complete:
        warnings.warn(f"{said}, and {root} holds no complete checkpoint: starting afresh",
                      stacklevel=2)
        return None
    warnings.warn(f"{said}; resuming from the newest complete checkpoint, {complete[-1]}",
                  stacklevel=2)
    return complete[-1]


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / STATE, map_location="cpu", weights_only=False)
