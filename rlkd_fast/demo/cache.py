"""The offline demo's models, built on first use and cached under the run's ``cache_dir``.

``student=tiny`` names them: a byte-level BPE tokenizer trained on synthetic problems and a
small untrained Llama-style student (``judge=tiny`` is not built here: it ships with the package,
see :mod:`rlkd_fast.demo.judge_artifact`). Each is a directory written all at once
(``rlkd_fast.atomic.write_dir``, flushed to disk before it is renamed into place) under a name
that hashes what built it, so only the first run pays and a killed build is never reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from rlkd_fast import atomic
from rlkd_fast.checkpoint import save_model
from rlkd_fast.config import TrainConfig
from rlkd_fast.data import load_split
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.prompts import judge_prompt, pot_prompt, program_body

TINY_VERSION = 1  # bump when the tiny builders change, so stale caches are not reused


def _key(**parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def _cached(cfg: TrainConfig, name: str, build: Callable[[Path], None]) -> Path:
    """``cache_dir/name``, built by ``build(tmp)`` unless it exists (see
    ``rlkd_fast.atomic.write_dir``)."""
    def seeded(tmp: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # a cache miss must not change the run's RNG
            build(tmp)

    return atomic.write_dir(Path(os.path.expanduser(cfg.cache_dir)) / name, seeded)


def tokenizer_dir(cfg: TrainConfig) -> Path:
    """The tiny tokenizer, trained on 3,000 synthetic programs and 500 judge prompts."""
    def build(tmp: Path) -> None:
        corpus = load_split("synthetic", split="train", size=3000, seed=1234)
        texts = [pot_prompt(p.question) + program_body(p.program) for p in corpus]
        texts += [judge_prompt(p.question, p.program) + " Yes" for p in corpus[:500]]
        train_tokenizer(texts).save_pretrained(tmp)

    return _cached(cfg, f"tiny-tokenizer-{_key(v=TINY_VERSION)}", build)


def student_dir(cfg: TrainConfig, build: bool = True) -> Path:
    """The untrained tiny student (``tiny_hidden``, ``tiny_layers``, ``seed``); with
    ``build=False`` only its path (the other ranks of a data-parallel run wait for the main
    one to build it)."""
    name = "tiny-student-" + _key(v=TINY_VERSION, h=cfg.tiny_hidden, l=cfg.tiny_layers,
                                  seed=cfg.seed)
    if not build:
        return Path(os.path.expanduser(cfg.cache_dir)) / name

    def make(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir(cfg))
        model = tiny_causal_lm(tok, hidden_size=cfg.tiny_hidden, layers=cfg.tiny_layers,
                               heads=max(1, cfg.tiny_hidden // 32), max_positions=1024,
                               seed=cfg.seed)
        save_model(model, tok, tmp)

    return _cached(cfg, name, make)
