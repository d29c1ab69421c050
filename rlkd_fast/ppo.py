"""The RL math of one update, on tensors: rewards -> advantages -> clipped losses.

PPO follows ReFT: the terminal reward sits on the last response token, every token pays
``kl_coef * (logp_old - logp_ref)``, GAE over the per-token rewards (values from the shared-trunk
head), advantages whitened over the batch, clipped surrogate + clipped value loss. GRPO gives each
sample its group-normalised reward as a per-sequence advantage and puts the KL to the reference in
the loss instead. The heavy per-token work runs in ``rlkd_fast.kernels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlkd_fast.kernels import fused_ppo_loss, gae, grpo_advantages, ppo_loss, token_logprobs
from rlkd_fast.policy import PolicyWithValue, SequenceBatch


@dataclass
class Experience:
    """One loader's rollout, scored and ready for PPO epochs. Shapes: N rows, R response tokens."""

    source: str  # "vr" | "yon" | "rerank"
    batch: SequenceBatch
    scores: torch.Tensor  # [N] terminal reward per response
    old_logprobs: torch.Tensor  # [N, R]
    ref_logprobs: torch.Tensor | None  # [N, R]
    advantages: torch.Tensor  # [N, R] (PPO) or [N] (GRPO)
    old_values: torch.Tensor | None = None  # [N, R] (PPO)
    returns: torch.Tensor | None = None  # [N, R] (PPO)

    def __len__(self) -> int:
        return len(self.batch)

    def select(self, idx: torch.Tensor) -> Experience:
        pick = lambda t: None if t is None else t[idx]
        return Experience(self.source, self.batch.select(idx), self.scores[idx],
                          self.old_logprobs[idx], pick(self.ref_logprobs), self.advantages[idx],
                          pick(self.old_values), pick(self.returns))


def terminal_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] scores placed on each row's last valid token of ``mask`` [N, R]; zeros elsewhere."""
    mask = mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1)
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    rows = torch.nonzero(last >= 0).squeeze(1)
    out[rows, last[rows]] = scores[rows].float()
    return out


def ppo_token_advantages(
    scores: torch.Tensor,
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
    rewards = terminal_rewards(scores, mask)
    if ref_logprobs is not None and kl_coef > 0:
        rewards = rewards - kl_coef * (old_logprobs - ref_logprobs) * mask.float()
    return gae(rewards, values, mask, gamma=gamma, lam=lam, whiten=whiten)


def group_advantages(scores: torch.Tensor, group: int, scale: bool = True) -> torch.Tensor:
    """GRPO: each sample's reward minus its group's mean (``group`` consecutive rows), divided
    by the group's std when ``scale``."""
    return grpo_advantages(scores.float(), group, scale=scale)


@torch.no_grad()
def score_tokens(
    policy: PolicyWithValue, ref: PolicyWithValue | None, batch: SequenceBatch,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Old log-probs [N, R], reference log-probs [N, R] (or None) and values [N, R] (or None)."""
    logits, values = policy(batch)
    old = token_logprobs(logits, batch.response_ids, temperature=temperature)
    ref_logprobs = None
    if ref is not None:
        ref_logits, _ = ref(batch)
        ref_logprobs = token_logprobs(ref_logits, batch.response_ids, temperature=temperature)
    return old, ref_logprobs, values


def minibatch_loss(
    policy: PolicyWithValue, exp: Experience, rl: str, *, clip: float, value_clip: float,
    vf_coef: float, kl_coef: float, entropy_coef: float, reduction: str, temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The differentiable loss of one minibatch of one loader and its stats."""
    logits, values = policy(exp.batch)
    mask = exp.batch.response_mask
    if rl == "grpo":
        loss, stats = fused_ppo_loss(
            logits, exp.batch.response_ids, exp.old_logprobs, exp.advantages, mask,
            ref_logprobs=exp.ref_logprobs, kl_coef=kl_coef, clip=clip,
            entropy_coef=entropy_coef, temperature=temperature, reduction=reduction)
    else:
        logp = token_logprobs(logits, exp.batch.response_ids, temperature=temperature)
        loss, stats = ppo_loss(
            logp, exp.old_logprobs, exp.advantages, mask, values=values,
            old_values=exp.old_values, returns=exp.returns, clip=clip, value_clip=value_clip,
            vf_coef=vf_coef, reduction=reduction)
    return loss, {k: float(v) for k, v in stats.items() if v.dim() == 0}
