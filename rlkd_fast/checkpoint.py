"""Atomic, resumable checkpoints.

A checkpoint is a directory ``ckpt-<step>`` holding the policy in Hugging Face format (so the
evaluation and any other tool can load it) and ``trainer_state.pt`` (optimizer, RNG states,
counters, data positions). It is written under a temporary name, flushed, renamed into place, and
only then does the ``latest`` pointer file move to it (also by rename): a run killed at any moment
leaves either the previous checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlkd_fast.prompts import save_prompt_settings

LATEST = "latest"


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


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(output_dir: str | Path, step: int, policy, trainer_state: dict[str, Any],
                    tokenizer=None, keep: int = 2,
                    prompt_settings: dict[str, Any] | None = None) -> Path:
    """Write ``ckpt-<step>`` atomically and point ``latest`` at it; keep the newest ``keep``.

    ``ckpt-<step>/policy`` is a complete Hugging Face directory (with ``tokenizer``), so
    ``python -m rlkd_fast.evaluate --model .../policy`` works on any checkpoint; with
    ``prompt_settings`` (:func:`rlkd_fast.prompts.save_prompt_settings`'s arguments) it also says
    how the policy was prompted, and evaluation prompts it the same way."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:07d}"
    tmp = root / f".tmp-ckpt-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.save(tmp / "policy")
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "policy")
    if prompt_settings is not None:
        save_prompt_settings(tmp / "policy", **prompt_settings)
    torch.save(trainer_state | {"step": step, "rng": rng_state()}, tmp / "trainer_state.pt")
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    for old in sorted(root.glob("ckpt-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points at, or None when the run has none yet."""
    root = Path(output_dir)
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "trainer_state.pt").exists():
        raise RuntimeError(f"{pointer} points at {path}, which is incomplete or missing")
    return path


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / "trainer_state.pt", map_location="cpu", weights_only=False)
