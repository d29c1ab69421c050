"""What a run reports: per-step times in metrics.jsonl that add up to the summary's totals, and a
resumed run's summary that covers the whole run as well as its own session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_train import TINY

from rlkd_fast.train import main


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def run(out: Path, cache: str, *extra: str) -> dict:
    # coef_yon=0: no judge to teach; 4 rows per rollout in minibatches of 2: 2 steps a rollout.
    return main([f"output_dir={out}", f"cache_dir={cache}", *TINY, "coef_vr=1", "coef_yon=0",
                 *extra])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_time_in_metrics_is_per_step_and_adds_up_to_the_summary(tmp_path, cache):
    summary = run(tmp_path, cache, "rl_steps=4")
    rl = [r for r in records(tmp_path) if r.get("stage") == "ppo"]
    sft = [r for r in records(tmp_path) if r.get("stage") == "sft"]
    assert len(rl) == 4 and sft
    totals = summary["time_split_seconds"]
    for key in ("generate", "execute", "score", "update"):
        assert sum(r[f"time/{key}"] for r in rl) == pytest.approx(totals[key], rel=1e-6), key
    assert sum(r["time/sft"] for r in sft) == pytest.approx(totals["sft"], rel=1e-6)
    # A rollout's generation is on the first step it feeds; every step has its own update.
    assert [r["time/generate"] > 0 for r in rl] == [True, False, True, False]
    assert all(r["time/update"] > 0 for r in rl)


def test_resumed_summary_reports_the_whole_run_and_this_session(tmp_path, cache):
    first = run(tmp_path, cache, "rl_steps=2", "save_every=2")
    ckpt = tmp_path / (tmp_path / "latest").read_text()
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    second = run(tmp_path, cache, "rl_steps=4", "save_every=2", "resume=true")
    session = second["this_session"]
    assert (second["steps"], session["steps"]) == (4, 2)
    assert (second["sft_steps"], session["sft_steps"]) == (first["sft_steps"], 0)
    # The whole run's time: the first session's up to the checkpoint resumed from, and this one.
    assert second["wall_seconds"] - session["wall_seconds"] == pytest.approx(state["elapsed"],
                                                                             abs=0.05)
    assert second["time_split_seconds"]["sft"] == pytest.approx(first["time_split_seconds"]["sft"])
    assert json.loads((tmp_path / "summary.json").read_text())["this_session"]["steps"] == 2
