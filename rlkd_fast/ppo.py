"""The RL math of one update, on tensors: rewards -> advantages -> clipped losses, for PPO and GRPO.

PPO follows ReFT: the terminal reward sits on the last response token, every token pays
``kl_coef * (logp_old - logp_ref)``, GAE over the per-token rewards (values from the shared-trunk
head), advantages whitened over the batch, clipped surrogate + clipped value loss. GRPO gives each
sample its group-normalised reward as a per-sequence advantage and puts the KL to the reference in
the loss instead. :data:`ALGORITHMS` holds what differs between the two, so a trainer chooses once.
The heavy per-token work runs in ``rlkd_fast.kernels``; the formulas are in ``docs/method.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rlkd_fast.kernels import fused_ppo_loss, gae, grpo_advantages, ppo_loss, token_logprobs
from rlkd_fast.policy import PolicyWithValue, SequenceBatch


@dataclass
class Experience:
    """One loader's rollout, scored and ready for PPO epochs. Shapes: N rows, R response tokens."""

    source: str  # "vr" | "yon" | "rerank"
    batch: SequenceBatch
    rewards: torch.Tensor  # [N] terminal reward per response
    old_logprobs: torch.Tensor | None  # [N, R]; None: the policy that sampled is the current one
    ref_logprobs: torch.Tensor | None  # [N, R]
    advantages: torch.Tensor  # [N, R] (PPO) or [N] (GRPO)
    old_values: torch.Tensor | None = None  # [N, R] (PPO)
    returns: torch.Tensor | None = None  # [N, R] (PPO)

    def __len__(self) -> int:
        return len(self.batch)

    def select(self, idx: torch.Tensor) -> Experience:
        pick = lambda t: None if t is None else t[idx]
        return Experience(self.source, self.batch.select(idx), self.rewards[idx],
                          pick(self.old_logprobs), pick(self.ref_logprobs), self.advantages[idx],
                          pick(self.old_values), pick(self.returns))


@dataclass(frozen=True)
class RLSettings:
    """The hyper-parameters of the advantages and losses (named as in ``TrainConfig``)."""

    clip: float = 0.2  # the ratio's clip range [1 - clip, 1 + clip]
    value_clip: float = 0.2  # PPO: the value's clip range around the rollout's
    vf_coef: float = 0.1  # PPO: the value loss's weight
    kl_coef: float = 0.0  # PPO: in the per-token reward; GRPO: a loss term (k3)
    entropy_coef: float = 0.0  # GRPO: the entropy bonus's weight
    reduction: str = "seq-mean-token-mean"
    temperature: float = 1.0  # of the logits, as in sampling
    gamma: float = 1.0  # PPO: GAE discount
    lam: float = 0.95  # PPO: GAE lambda
    whiten_advantages: bool = True  # PPO
    grpo_group: int = 8  # GRPO: samples per question
    grpo_scale: bool = True  # GRPO: divide by the group's std

    @classmethod
    def of(cls, config: Any) -> RLSettings:
        """The settings of a config (any object with these fields, e.g. a ``TrainConfig``)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def terminal_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] rewards placed on each row's last valid token of ``mask`` [N, R]; zeros elsewhere."""
    mask = mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    rows = torch.nonzero(last >= 0).squeeze(1)
    out[rows, last[rows]] = rewards[rows].float()
    return out


def ppo_token_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    values: torch.Tensor,
    kl_coef: float,
    gamma: float,
    lam: float,
    whiten: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ReFT's per-token rewards and GAE: returns (advantages, returns), both [N, R] fp32."""
    token_rewards = terminal_rewards(rewards, mask)
    if ref_logprobs is not None and kl_coef > 0:
        token_rewards = token_rewards - kl_coef * (old_logprobs - ref_logprobs) * mask.float()
    return gae(token_rewards, values, mask, gamma=gamma, lam=lam, whiten=whiten)


def group_advantages(rewards: torch.Tensor, group: int, scale: bool = True) -> torch.Tensor:
    """GRPO: each sample's reward minus its group's mean (``group`` consecutive rows), divided
    by the group's std when ``scale``."""
    return grpo_advantages(rewards.float(), group, scale=scale)


@torch.no_grad()
def score_tokens(
    policy: PolicyWithValue, ref: PolicyWithValue | None, batch: SequenceBatch,
    temperature: float = 1.0, sampled: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Old log-probs [N, R], reference log-probs [N, R] (or None) and values [N, R] (or None).

    ``sampled`` [N, R]: the log-probs the sampling pass recorded (``Rollout.logprobs``, same
    temperature); given a policy without a value head, they are the old log-probs and the
    policy's forward is skipped (they equal it up to float rounding: see ``rlkd_fast.decode``).
    """
    if sampled is not None and policy.value_head is None:
        old, values = sampled.to(batch.response_ids.device, torch.float32), None
    else:
        logits, values = policy(batch)
        old = token_logprobs(logits, batch.response_ids, temperature=temperature)
    ref_logprobs = None
    if ref is not None:
        ref_logits, _ = ref(batch)
        ref_logprobs = token_logprobs(ref_logits, batch.response_ids, temperature=temperature)
    return old, ref_logprobs, values


# ------------------------------------------------------------------------------ PPO and GRPO
Advantages = tuple[torch.Tensor, torch.Tensor | None]  # (advantages, returns or None)


def _ppo_advantages(rewards: torch.Tensor, batch: SequenceBatch, old: torch.Tensor,
                    ref: torch.Tensor | None, values: torch.Tensor | None,
                    s: RLSettings) -> Advantages:
    return ppo_token_advantages(rewards, batch.response_mask, old, ref, values, s.kl_coef,
                                s.gamma, s.lam, s.whiten_advantages)


def _grpo_advantages(rewards: torch.Tensor, batch: SequenceBatch, old: torch.Tensor,
                     ref: torch.Tensor | None, values: torch.Tensor | None,
                     s: RLSettings) -> Advantages:
    return group_advantages(rewards, s.grpo_group, s.grpo_scale), None


def _scalars(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in stats.items() if v.dim() == 0}


def ppo_minibatch_loss(policy: PolicyWithValue, exp: Experience,
                       s: RLSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate + clipped value loss of one minibatch (the KL is in the rewards).
    ``exp.old_logprobs`` None: on-policy (the current log-probs, detached)."""
    logits, values = policy(exp.batch)
    logp = token_logprobs(logits, exp.batch.response_ids, temperature=s.temperature)
    old = logp.detach() if exp.old_logprobs is None else exp.old_logprobs
    loss, stats = ppo_loss(
        logp, old, exp.advantages, exp.batch.response_mask, values=values,
        old_values=exp.old_values, returns=exp.returns, clip=s.clip, value_clip=s.value_clip,
        vf_coef=s.vf_coef, reduction=s.reduction)
    return loss, _scalars(stats)


def grpo_minibatch_loss(policy: PolicyWithValue, exp: Experience,
                        s: RLSettings) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate + KL to the reference (+ entropy bonus) of one minibatch, straight from
    the logits. ``exp.old_logprobs`` None: on-policy (the current log-probs, detached)."""
    logits, _ = policy(exp.batch)
    old = exp.old_logprobs
    if old is None:  # on-policy: the current log-probs, computed as the loss computes them
        old = token_logprobs(logits.detach(), exp.batch.response_ids, temperature=s.temperature)
    loss, stats = fused_ppo_loss(
        logits, exp.batch.response_ids, old, exp.advantages,
        exp.batch.response_mask, ref_logprobs=exp.ref_logprobs, clip=s.clip,
        kl_coef=s.kl_coef, entropy_coef=s.entropy_coef, temperature=s.temperature,
        reduction=s.reduction)
    return loss, _scalars(stats)


@dataclass(frozen=True)
class Algorithm:
    """What differs between PPO and GRPO."""

    name: str
    value_head: bool  # a critic on the policy's trunk (PPO); GRPO has none
    samples: Callable[[RLSettings], int]  # responses sampled per question
    #: (rewards [N], batch, old log-probs, ref log-probs, values, settings) -> (advantages,
    #: returns or None)
    advantages: Callable[..., Advantages]
    #: (policy, a minibatch of experience, settings) -> (differentiable loss, scalar stats)
    loss: Callable[[PolicyWithValue, Experience, RLSettings],
                   tuple[torch.Tensor, dict[str, float]]]


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("ppo", value_head=True, samples=lambda s: 1,
                     advantages=_ppo_advantages, loss=ppo_minibatch_loss),
    "grpo": Algorithm("grpo", value_head=False, samples=lambda s: s.grpo_group,
                      advantages=_grpo_advantages, loss=grpo_minibatch_loss),
}
