"""Tiny end-to-end runs of the trainer on CPU: each stage, resume, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlkd_fast.config import load_config
from rlkd_fast.data import load_split
from rlkd_fast.train import main

TINY = [
    "max_train=16", "max_unlabeled=16", "max_eval=4", "sft_epochs=0.5", "sft_batch_size=8",
    "sft_target_accuracy=0",
    "rollout_batch=4", "minibatch_size=2", "ppo_epochs=1", "max_new_tokens=16",
    "tiny_hidden=32", "tiny_layers=1",
    "progress=false", "exec_workers=1", "prompt_style=header", "labeled=synthetic:1",
    "unlabeled=synthetic:1", "eval_dataset=synthetic:1", "stages=sft,ppo", "temperature=1.0",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def run(tmp: Path, cache: str, *extra: str) -> dict:
    return main([f"output_dir={tmp}", f"cache_dir={cache}", *TINY, *extra])


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = run_dir / (run_dir / "latest").read_text()
    return load_file(ckpt / "policy" / "model.safetensors")


@pytest.mark.slow
def test_sft_then_ppo_writes_summary_metrics_and_checkpoint(tmp_path, cache):
    summary = run(tmp_path, cache, "rl_steps=2", "coef_vr=0.5", "coef_yon=0.5")
    for key in ("initial_accuracy", "final_accuracy", "steps", "wall_seconds"):
        assert key in summary
    assert summary["steps"] == 2
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["steps"] == 2 and 0 <= on_disk["final_accuracy"] <= 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r.get("stage") == "ppo"]
    assert len(rl) == 2
    for key in ("reward/vr", "reward/yon", "judge/yon_mass", "judge/yon_spread",
                "monitor/yon_true_accuracy", "vr/clip_frac", "vr/value_loss",
                "response/vr_short_frac", "time/generate", "time/execute", "time/judge"):
        assert key in rl[-1], key
    assert any(r.get("stage") == "sft" for r in records)
    assert (tmp_path / "latest").exists() and (tmp_path / "reference").is_dir()
    assert (tmp_path / "curves.png").stat().st_size > 10_000  # the overview figure


def test_sft_stops_once_the_dev_accuracy_reaches_its_target(tmp_path, cache, monkeypatch):
    """The warm-up checks greedy accuracy on the dev problems (the first labeled ones, which
    SFT never trains on) 4 times an epoch and stops at the first check at the target."""
    import rlkd_fast.train as train_module

    dev_accuracies = iter([0.0, 0.2, 0.5, 0.9])
    trained_on: set[str] = set()
    real_greedy, real_sft_loss = train_module.Trainer._greedy, train_module.sft_loss

    def scripted(self, problems):
        if problems is self.data.dev:
            return {"greedy_acc": next(dev_accuracies)}
        return real_greedy(self, problems)

    def recording(model, tokenizer, problems, *args):
        trained_on.update(p.id for p in problems)
        return real_sft_loss(model, tokenizer, problems, *args)

    monkeypatch.setattr(train_module.Trainer, "_greedy", scripted)
    monkeypatch.setattr(train_module, "sft_loss", recording)
    # 40 labeled problems: 8 dev, 32 for SFT = 4 steps an epoch, so a check every step.
    summary = run(tmp_path, cache, "stages=sft", "max_train=40", "sft_dev_problems=8",
                  "sft_target_accuracy=0.4", "sft_epochs=10")
    assert summary["sft_steps"] == 3  # 0.0, 0.2, then 0.5 >= 0.4
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["sft/dev_accuracy"] for r in records if "sft/dev_accuracy" in r] == [0.0, 0.2, 0.5]
    dev = {p.id for p in load_split("synthetic:1", split="train", size=40)[:8]}
    assert trained_on and not trained_on & dev


def test_grpo_stage_runs_without_value_head(tmp_path, cache):
    summary = run(tmp_path, cache, "stages=sft,grpo", "rl_steps=1", "grpo_group=2",
                  "coef_vr=1", "coef_yon=0", "kl_coef=0.05")
    assert summary["steps"] == 1
    rl = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
          if '"grpo"' in line]
    assert "vr/kl" in rl[-1] and "vr/value_loss" not in rl[-1]


def test_periodic_evaluation_uses_the_evaluation_module(tmp_path, cache, monkeypatch):
    """The held-out set is evaluated before RL, whenever the step count crosses a multiple of
    eval_every (a rollout of 8 samples in minibatches of 2 takes 4 optimizer steps at once) and
    at the end, each time by rlkd_fast.evaluate.evaluate, prompted in the run's style."""
    import rlkd_fast.evaluate as evaluation

    calls, real = [], evaluation.evaluate

    def spy(model, tokenizer, problems, **kwargs):
        calls.append((len(problems), kwargs["prompt_style"]))
        return real(model, tokenizer, problems, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", spy)
    summary = run(tmp_path, cache, "stages=sft,grpo", "rl_steps=6", "grpo_group=2",
                  "coef_vr=1", "coef_yon=0", "eval_every=3")
    assert [e["tag"] for e in summary["evals"]] == ["initial", "step4", "step6", "final"]
    assert [e["step"] for e in summary["evals"]] == [0, 4, 6, 6]
    assert calls == [(4, "header")] * 4
    assert summary["final_accuracy"] == summary["evals"][-1]["accuracy"]


def test_zero_coefficient_never_loads_its_judge(tmp_path, cache, monkeypatch):
    import rlkd_fast.run_inputs as run_inputs

    def refuse(*args, **kwargs):
        raise AssertionError("the judge of a zero coefficient was loaded")

    monkeypatch.setattr(run_inputs, "load_yon_judge", refuse)
    summary = run(tmp_path, cache, "rl_steps=1", "coef_vr=1", "coef_yon=0")
    assert summary["steps"] == 1


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path, cache):
    # 2 updates per rollout (4 rows, minibatches of 2, 1 PPO epoch); checkpoints every rollout.
    common = ["coef_vr=0.5", "coef_yon=0.5", "save_every=2"]
    run(tmp_path / "straight", cache, "rl_steps=4", *common)
    run(tmp_path / "split", cache, "rl_steps=2", *common)  # stops (as if killed) at step 2
    summary = run(tmp_path / "split", cache, "rl_steps=4", "resume=true", *common)
    assert summary["resumed_from"] is not None and summary["steps"] == 4
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    logs = [(tmp_path / d / "metrics.jsonl").read_text().splitlines()
            for d in ("straight", "split")]
    steps = [[json.loads(line)["step"] for line in log] for log in logs]
    assert sorted(set(steps[0])) == sorted(set(steps[1]))


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, cache):
    args = [f"output_dir={tmp_path}", f"cache_dir={cache}", *TINY, "rl_steps=6", "save_every=1",
            "coef_vr=1", "coef_yon=0"]
    proc = subprocess.Popen([sys.executable, "-m", "rlkd_fast.train", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            latest = tmp_path / "latest"
            if latest.exists() and "ckpt-" in latest.read_text():
                step = int(latest.read_text().split("-")[1])
                if step > 8:  # past SFT (4 steps) and the first RL checkpoints
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "latest").exists(), "no checkpoint before the kill"
    summary = main([*args, "resume=true"])
    assert summary["resumed_from"] is not None
    assert summary["steps"] == 6
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written checkpoint left behind... or used


@pytest.mark.parametrize("override, message", [
    ("gamma=1.5", "gamma must be in"),
    ("coef_vr=0.7", "must sum to 1"),
    ("stages=sft,dpo", "unknown stage"),
    ("rl_step=3", "unknown config key 'rl_step'"),
    ("rl_steps=abc", "rl_steps: expected an integer"),
    ("coef_rerank=0.5", "needs reranker"),
])
def test_config_errors_are_clear(override, message):
    base = ["coef_vr=0.5", "coef_yon=0.5"]
    if override.startswith("coef_rerank"):
        base = ["coef_vr=0.5", "coef_yon=0"]
    with pytest.raises(ValueError, match=message):
        load_config(None, [*base, override])


def test_config_file_and_cli_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("rl_steps: 7\ncoef_vr: 1.0\ncoef_yon: 0.0\nstages: [sft, grpo]\n")
    cfg = load_config(path, ["rl_steps=9"])
    assert cfg.rl_steps == 9 and cfg.stages == ["sft", "grpo"] and cfg.coef_vr == 1.0
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_cli_rejects_bad_config_with_exit_code_2():
    proc = subprocess.run([sys.executable, "-m", "rlkd_fast.train", "gamma=3"],
                          capture_output=True, text=True, env=os.environ | {"CI": "1"})
    assert proc.returncode == 2 and "gamma must be in" in proc.stderr


def test_every_shipped_config_loads_and_validates():
    from rlkd_fast.config import SHIPPED

    names = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
    assert "galactica125m_gsm8k_vr_yon" in names and len(names) >= 10
    coefs = {}
    for name in names:
        cfg = load_config(name)
        coefs[name] = (cfg.coef_vr, cfg.coef_yon, cfg.coef_rerank)
        assert cfg.student != "tiny" and cfg.judge != "tiny", name
    assert coefs["galactica125m_gsm8k_vr_yon_rerank"] == (0.5, 0.25, 0.25)
    assert load_config("galactica125m_gsm8k_vr_yon_aug5").unlabeled_fraction == 0.05
    assert load_config("codegen350m_gsm8k_vr_yon").vf_coef == 0.1


@pytest.mark.slow
def test_two_process_ddp_replicas_stay_identical(tmp_path, cache):
    """2 CPU processes (gloo): after SFT and a PPO update, both replicas hold the same weights,
    and those weights moved."""
    script = Path(__file__).parent / "ddp_replicas.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", str(script), str(tmp_path), cache, *TINY, "rl_steps=1",
           "coef_vr=0.5", "coef_yon=0.5"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"replica{i}.pt") for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    moved = False
    for name, w in r0["after"].items():
        torch.testing.assert_close(w, r1["after"][name], rtol=0, atol=0, msg=name)
        moved |= not torch.equal(w, r0["before"][name])
    assert moved, "no parameter changed: the update did not happen"
