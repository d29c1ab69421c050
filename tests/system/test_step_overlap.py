"""The RL step's order and its old log-probs, through ``rlkd_fast.train``: the log-probs are
scored while the programs run; GRPO takes its old log-probs from the sampling pass (no second
forward of the policy), its first minibatch is exactly on-policy, and the losses equal those of
the recomputing path within float rounding; the CPU thread policy is applied."""

from __future__ import annotations

import json

import pytest
import torch

import rlkd_fast.train as train_module
from rlkd_fast.config import load_config
from rlkd_fast.train import Trainer, main

TINY = [
    "max_train=16", "max_unlabeled=16", "max_eval=2", "sft_epochs=0.5", "sft_batch_size=8",
    "sft_target_accuracy=0",
    "rollout_batch=2", "grpo_group=4", "minibatch_size=4", "ppo_epochs=1", "max_new_tokens=16",
    "tiny_hidden=32", "tiny_layers=1", "progress=false", "exec_workers=1",
    "prompt_style=header", "labeled=synthetic:1", "eval_dataset=synthetic:1",
    "stages=sft,grpo", "temperature=0.7", "coef_vr=1", "coef_yon=0", "kl_coef=0.01",
    "rl_steps=4", "save_every=0",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def rl_records(out) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("stage") == "grpo"]


def test_scoring_runs_before_waiting_for_the_programs(tmp_path, cache, monkeypatch):
    events: list[str] = []
    score, verify = Trainer._score, Trainer._verify

    def spy_score(self, roll):
        events.append("score")
        return score(self, roll)

    def spy_verify(self, pending, rows, stats):
        events.append("wait for programs")
        return verify(self, pending, rows, stats)

    monkeypatch.setattr(Trainer, "_score", spy_score)
    monkeypatch.setattr(Trainer, "_verify", spy_verify)
    main([f"output_dir={tmp_path}", f"cache_dir={cache}", *TINY, "rl_steps=2"])
    assert events == ["score", "wait for programs"]  # one rollout, 2 optimizer steps


@pytest.mark.slow
def test_sampled_old_logprobs_skip_the_forward_and_match_recomputing(tmp_path, cache,
                                                                       monkeypatch):
    calls: dict[str, list] = {"sampling": [], "recompute": []}
    real = train_module.score_tokens
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    for mode in calls:
        def spy(policy, ref, batch, temperature=1.0, sampled=None, mode=mode):
            calls[mode].append(sampled)
            forwards = []
            hook = policy.register_forward_hook(lambda *a: forwards.append(1))
            try:
                out = real(policy, ref, batch, temperature, sampled=sampled)
            finally:
                hook.remove()
            calls[mode][-1] = len(forwards)
            return out

        monkeypatch.setattr(train_module, "score_tokens", spy)
        torch.manual_seed(0)
        main([f"output_dir={tmp_path / mode}", f"cache_dir={cache}", *TINY,
              f"old_logprobs={mode}", "cpu_threads=1"])
    assert calls == {"sampling": [0, 0], "recompute": [1, 1]}  # 2 rollouts of 2 steps each
    assert threads and set(threads) == {1}
    sampled, recomputed = rl_records(tmp_path / "sampling"), rl_records(tmp_path / "recompute")
    assert len(sampled) == len(recomputed) == 4
    for step in (0, 2):  # the first minibatch of each rollout: exactly on-policy
        assert sampled[step]["vr/ratio_mean"] == 1.0 and sampled[step]["vr/approx_kl"] == 0.0
    assert sampled[0]["vr/kl"] == 0.0  # the reference is the policy before the first step
    for a, b in zip(sampled, recomputed):  # the same rollouts; old log-probs differ by rounding
        assert a["reward/vr"] == b["reward/vr"]
        for key in ("vr/loss", "vr/ratio_mean", "vr/kl"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_new_fields_are_validated():
    for bad, field in (("old_logprobs=twice", "old_logprobs"),
                       ("generation_engine=vllm", "generation_engine"),
                       ("cpu_threads=-1", "cpu_threads"), ("sampler=gumbel", "sampler")):
        with pytest.raises(ValueError, match=field):
            load_config(None, [bad])
    cfg = load_config(None, [])
    assert (cfg.old_logprobs, cfg.generation_engine, cfg.cpu_threads, cfg.sampler) == (
        "sampling", "auto", 1, "inverse_cdf")


def test_score_tokens_uses_the_sampled_logprobs_only_without_a_value_head():
    from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
    from rlkd_fast.policy import PolicyWithValue, SequenceBatch
    from rlkd_fast.ppo import score_tokens

    tok = train_tokenizer(["def solution():\n    return 3 + 4"] * 4, vocab_size=120)
    lm = tiny_causal_lm(tok, hidden_size=16, layers=1, heads=1)
    ids = torch.randint(3, 100, (2, 5))
    batch = SequenceBatch(ids, torch.ones_like(ids), ids[:, :3], torch.ones_like(ids[:, :3]))
    sampled = -torch.rand(2, 3)
    for with_value, forwards_expected in ((False, 0), (True, 1)):
        policy = PolicyWithValue(lm, with_value=with_value).eval()
        forwards: list[int] = []
        hook = policy.register_forward_hook(lambda *a, seen=forwards: seen.append(1))
        old, _, values = score_tokens(policy, None, batch, 0.7, sampled=sampled)
        hook.remove()
        assert len(forwards) == forwards_expected
        assert torch.equal(old, sampled) != with_value  # PPO scores with its forward
        assert (values is None) != with_value
