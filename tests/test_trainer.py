"""The trainer's pieces on their own: its typed checkpoint state, the executor accessor, and
update() leaving the policy in eval mode however it ends."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlkd_fast import run_inputs
from rlkd_fast.config import load_config
from rlkd_fast.policy import SequenceBatch
from rlkd_fast.ppo import Algorithm, Experience, RLSettings
from rlkd_fast.train import Trainer, TrainerState


def bare_trainer(loss) -> Trainer:
    """A Trainer with just what update() reads: a one-weight policy, a plain accelerator
    stand-in, and an algorithm whose loss is ``loss(policy)``."""
    trainer = Trainer.__new__(Trainer)
    trainer.cfg = load_config(None, ["coef_vr=1", "coef_yon=0", "minibatch_size=1",
                                     "ppo_epochs=2"])
    trainer.policy = torch.nn.Linear(1, 1)
    trainer.device = torch.device("cpu")
    trainer.state = TrainerState()
    trainer.settings = RLSettings()
    trainer.algo = Algorithm("test", value_head=False, samples=lambda s: 1,
                             advantages=None, loss=lambda policy, exp, s: (loss(policy), {}))
    trainer.acc = SimpleNamespace(backward=lambda x: x.backward(),
                                  clip_grad_norm_=lambda params, norm: torch.tensor(0.0),
                                  no_sync=lambda model: None)
    return trainer


def experience(n: int = 2) -> Experience:
    ids = torch.zeros(n, 1, dtype=torch.long)
    batch = SequenceBatch(ids, torch.ones_like(ids), ids, torch.ones_like(ids))
    zeros = torch.zeros(n, 1)
    return Experience("vr", batch, torch.zeros(n), zeros, None, torch.zeros(n))


def test_update_restores_eval_mode_when_stopped_early_or_failing():
    trainer = bare_trainer(lambda policy: policy.weight.sum())
    opt = torch.optim.SGD(trainer.policy.parameters(), lr=0.1)
    steps = trainer.update(trainer.policy, opt, [experience()])
    next(steps)
    assert trainer.policy.training
    steps.close()  # the loop took the steps it needed (rl_steps reached mid-rollout)
    assert not trainer.policy.training
    assert len(list(trainer.update(trainer.policy, opt, [experience()]))) == 4  # 2 epochs x 2
    assert not trainer.policy.training

    def fail(policy):
        raise RuntimeError("out of memory")

    trainer = bare_trainer(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        next(trainer.update(trainer.policy, opt, [experience()]))
    assert not trainer.policy.training


def test_the_executor_opens_once_on_first_use(monkeypatch):
    opened = []
    monkeypatch.setattr(run_inputs, "open_executor", lambda cfg: opened.append(cfg) or "ex")
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.executor = load_config(None, ["coef_vr=1", "coef_yon=0"]), None
    assert opened == []
    assert trainer._executor() == trainer._executor() == "ex"
    assert opened == [trainer.cfg]


def test_trainer_state_round_trips_through_a_checkpoint_dict():
    state = TrainerState(sft_step=3, sft_done=True, rl_step=5, initial_accuracy=0.25,
                         evals=[{"tag": "initial", "accuracy": 0.25}],
                         streams={"sft": {"epoch": 1, "pos": 2}}, elapsed=12.5,
                         optimizer={"state": {}, "param_groups": []})
    state.timers["generate"] += 1.5
    saved = state.to_dict() | {"step": 8, "rng": {"torch": None}}  # as save_checkpoint adds
    assert type(saved["timers"]) is dict
    again = TrainerState.from_dict(saved)
    assert again == state
    again.timers["judge"] += 2.0  # still counts from zero for a new phase
    assert again.timers["judge"] == 2.0


def test_trainer_state_reads_checkpoints_that_named_the_optimizer_per_stage():
    sft = TrainerState.from_dict({"sft_step": 4, "sft_optimizer": {"a": 1},
                                  "sft_scheduler": {"b": 2}, "step": 4, "rng": None})
    assert (sft.sft_step, sft.optimizer, sft.scheduler) == (4, {"a": 1}, {"b": 2})
    rl = TrainerState.from_dict({"rl_step": 7, "sft_done": True, "rl_optimizer": {"c": 3}})
    assert (rl.rl_step, rl.optimizer, rl.scheduler) == (7, {"c": 3}, None)
