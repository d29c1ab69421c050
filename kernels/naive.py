"""The obvious versions of the kernels' maths: plain Python loops over tokens, in float64.

Slow on purpose and written to be read against the formulas (``docs/method.md`` and each op's
module docstring), not against the fast code: a reverse loop over T for GAE, one token at a time
for the PPO losses, one row at a time for the log-probs and the YoN reward. The tests hold both
backends of every op (``"torch"``, the vectorised reference the CPU runs, and ``"triton"``) to
these on small random inputs, odd shapes and masks with holes.

Every function takes the op's arguments (tensors of any float dtype, masks of any dtype,
nonzero = valid) and returns float64 tensors on the inputs' device. The loss functions build
their result from the inputs with differentiable torch operations, so gradients can be compared
too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import LOG_RATIO_MAX
from .gae import WHITEN_EPS

__all__ = [
    "fused_ppo_loss_naive",
    "gae_naive",
    "grpo_advantages_naive",
    "masked_whiten_naive",
    "ppo_loss_naive",
    "token_logprobs_naive",
    "yon_reward_naive",
]


def _valid(mask: Tensor | None, shape: torch.Size) -> list[list[bool]]:
    if mask is None:
        return [[True] * shape[1] for _ in range(shape[0])]
    return (mask != 0).tolist()


def _reduce(rows: list[list[Tensor]], reduction: str, like: Tensor) -> Tensor:
    """Per-row lists of the valid tokens' terms -> one number: the mean over all tokens
    (``"token-mean"``) or the mean over the non-empty rows of each row's mean."""
    zero = like.new_zeros((), dtype=torch.float64)
    if reduction == "token-mean":
        terms = [x for row in rows for x in row]
        return sum(terms, zero) / max(1, len(terms))
    means = [sum(row, zero) / len(row) for row in rows if row]
    return sum(means, zero) / max(1, len(means))


# --------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------
def gae_naive(rewards: Tensor, values: Tensor, mask: Tensor | None = None,
              gamma: float = 1.0, lam: float = 0.95, whiten: bool = False
              ) -> tuple[Tensor, Tensor]:
    """GAE by a reverse loop over each row: masked positions are skipped (the next valid value
    and advantage carry through them) and get 0; the value after the last valid token is 0."""
    r, v = rewards.detach().double(), values.detach().double()
    valid = _valid(mask, r.shape)
    adv, ret = torch.zeros_like(r), torch.zeros_like(r)
    for b in range(r.shape[0]):
        next_value, next_adv = 0.0, 0.0
        for t in reversed(range(r.shape[1])):
            if not valid[b][t]:
                continue
            delta = r[b, t].item() + gamma * next_value - v[b, t].item()
            next_adv = delta + gamma * lam * next_adv
            next_value = v[b, t].item()
            adv[b, t], ret[b, t] = next_adv, next_adv + next_value
    if whiten:
        adv = masked_whiten_naive(adv, mask)
    return adv, ret


def masked_whiten_naive(x: Tensor, mask: Tensor | None,
                        eps: float = WHITEN_EPS) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the valid entries (unbiased variance, 0 with fewer
    than two entries), 0 elsewhere."""
    x = x.detach().double()
    valid = _valid(mask, x.shape)
    picked = [x[b, t].item() for b in range(x.shape[0]) for t in range(x.shape[1])
              if valid[b][t]]
    mean = sum(picked) / max(1, len(picked))
    var = sum((p - mean) ** 2 for p in picked) / (len(picked) - 1) if len(picked) > 1 else 0.0
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if valid[b][t]:
                out[b, t] = (x[b, t].item() - mean) / math.sqrt(var + eps)
    return out


def grpo_advantages_naive(rewards: Tensor, group_size: int, eps: float = 1e-6,
                          scale: bool = True) -> Tensor:
    """Each group's rewards minus the group mean, divided by its unbiased std + eps when
    ``scale``; a group whose rewards are all equal gets 0."""
    r = rewards.detach().double().tolist()
    out = []
    for g in range(0, len(r), group_size):
        group = r[g:g + group_size]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / max(1, len(group) - 1))
        for x in group:
            if max(group) == min(group):
                out.append(0.0)
            else:
                out.append((x - mean) / (std + eps) if scale else x - mean)
    return torch.tensor(out, dtype=torch.float64, device=rewards.device)


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------
def _clipped_surrogate(logp: Tensor, old: Tensor, a: Tensor, clip: float,
                       clip_high: float | None, dual_clip: float | None
                       ) -> tuple[Tensor, Tensor, bool, bool]:
    """One token's (policy loss, ratio, clipped, dual-clipped); the log-ratio is bounded at
    ``LOG_RATIO_MAX`` before it is exponentiated."""
    high = clip if clip_high is None else clip_high
    ratio = torch.exp(torch.clamp(logp - old, max=LOG_RATIO_MAX))
    unclipped, clipped = -a * ratio, -a * torch.clamp(ratio, 1 - clip, 1 + high)
    loss = torch.maximum(unclipped, clipped)
    dual = dual_clip is not None and a.item() < 0 and (-a * dual_clip).item() < loss.item()
    if dual:
        loss = -a * dual_clip
    return loss, ratio, clipped.item() > unclipped.item(), dual


def ppo_loss_naive(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor,
                   mask: Tensor | None, values: Tensor | None = None,
                   old_values: Tensor | None = None, returns: Tensor | None = None,
                   clip: float = 0.2, clip_high: float | None = None,
                   dual_clip: float | None = None, value_clip: float = 0.2, vf_coef: float = 0.1,
                   reduction: str = "seq-mean-token-mean") -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`rlkd_fast.kernels.ppo_loss`, token by token: (loss, stats) in float64."""
    lp, old, adv = logprobs.double(), old_logprobs.double(), advantages.double()
    valid = _valid(mask, lp.shape)
    terms: dict[str, list[list[Tensor]]] = {
        name: [[] for _ in range(lp.shape[0])]
        for name in ("policy_loss", "value_loss", "clip_frac", "approx_kl", "value_clip_frac",
                     "dual_clip_frac", "ratio_mean")}
    one, zero = lp.new_ones((), dtype=torch.float64), lp.new_zeros((), dtype=torch.float64)
    for b in range(lp.shape[0]):
        for t in range(lp.shape[1]):
            if not valid[b][t]:
                continue
            pg, ratio, clipped, dual = _clipped_surrogate(lp[b, t], old[b, t], adv[b, t], clip,
                                                          clip_high, dual_clip)
            row = {"policy_loss": pg, "ratio_mean": ratio, "clip_frac": one if clipped else zero,
                   "dual_clip_frac": one if dual else zero,
                   "approx_kl": 0.5 * (lp[b, t] - old[b, t]) ** 2,
                   "value_loss": zero, "value_clip_frac": zero}
            if values is not None:
                v, ret = values[b, t].double(), returns[b, t].double()
                err = (v - ret) ** 2
                if old_values is not None:
                    ov = old_values[b, t].double()
                    err_clipped = (torch.clamp(v, ov - value_clip, ov + value_clip) - ret) ** 2
                    row["value_clip_frac"] = one if err_clipped.item() > err.item() else zero
                    err = torch.maximum(err, err_clipped)
                row["value_loss"] = 0.5 * err
            for name, value in row.items():
                terms[name][b].append(value)
    stats = {name: _reduce(rows, reduction, lp) for name, rows in terms.items()}
    loss = stats["policy_loss"]
    if vf_coef != 0:  # no value term at all, so 0 * inf never makes a NaN
        loss = loss + vf_coef * stats["value_loss"]
    return loss, {name: s.detach() for name, s in stats.items()}


def token_logprobs_naive(logits: Tensor, ids: Tensor,
                         temperature: float = 1.0) -> Tensor:
    """``log softmax(logits / T)[id]`` one row at a time: logits [..., V], ids [...]."""
    flat = logits.reshape(-1, logits.shape[-1]).double() / temperature
    out = []
    for row, i in zip(flat, ids.reshape(-1).tolist(), strict=True):
        top = row.max()
        out.append(row[i] - (top + torch.log(torch.exp(row - top).sum())))
    return torch.stack(out).reshape(ids.shape)


def fused_ppo_loss_naive(logits: Tensor, ids: Tensor, old_logprobs: Tensor, advantages: Tensor,
                         mask: Tensor | None, ref_logprobs: Tensor | None = None,
                         clip: float = 0.2, clip_high: float | None = None,
                         dual_clip: float | None = None, kl_coef: float = 0.0,
                         kl_estimator: str = "k3", entropy_coef: float = 0.0,
                         temperature: float = 1.0, reduction: str = "seq-mean-token-mean",
                         ) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`rlkd_fast.kernels.fused_ppo_loss`, token by token: (loss, stats) in float64;
    ``stats["logprobs"]`` is [B, T] (0 where masked)."""
    valid = _valid(mask, ids.shape)
    old, adv = old_logprobs.double(), advantages.double()
    names = ("policy_loss", "kl", "entropy", "clip_frac", "approx_kl", "dual_clip_frac",
             "ratio_mean", "loss")
    terms: dict[str, list[list[Tensor]]] = {n: [[] for _ in range(ids.shape[0])]
                                                  for n in names}
    logprobs = torch.zeros(ids.shape, dtype=torch.float64, device=logits.device)
    one, zero = old.new_ones(()), old.new_zeros(())
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if not valid[b][t]:
                continue
            z = logits[b, t].double() / temperature
            logp_all = z - torch.logsumexp(z, 0)
            p = torch.exp(logp_all)
            entropy = -(p * torch.where(p > 0, logp_all, 0)).sum()  # 0 log 0 = 0
            logp = logp_all[ids[b, t]]
            a = adv[b] if adv.dim() == 1 else adv[b, t]
            pg, ratio, clipped, dual = _clipped_surrogate(logp, old[b, t], a, clip, clip_high,
                                                          dual_clip)
            kl = zero
            if ref_logprobs is not None:
                d = ref_logprobs[b, t].double() - logp
                if kl_estimator == "k3":
                    d = torch.clamp(d, max=LOG_RATIO_MAX)
                    kl = torch.exp(d) - d - 1
                else:
                    kl = -d
            loss = pg
            if kl_coef != 0:
                loss = loss + kl_coef * kl
            if entropy_coef != 0:
                loss = loss - entropy_coef * entropy
            row = {"policy_loss": pg, "kl": kl, "entropy": entropy, "ratio_mean": ratio,
                   "clip_frac": one if clipped else zero, "dual_clip_frac": one if dual else zero,
                   "approx_kl": 0.5 * (logp - old[b, t]) ** 2, "loss": loss}
            for name, value in row.items():
                terms[name][b].append(value)
            logprobs[b, t] = logp.detach()
    stats = {name: _reduce(rows, reduction, old) for name, rows in terms.items()}
    loss = stats.pop("loss")
    return loss, {**{n: s.detach() for n, s in stats.items()}, "logprobs": logprobs}


# --------------------------------------------------------------------------------------------------
# Judge reward
# --------------------------------------------------------------------------------------------------
def yon_reward_naive(logits: Tensor, yes_ids: Sequence[int], no_ids: Sequence[int],
                     tau: float = 1.0, delta: float = 0.5) -> tuple[Tensor, Tensor]:
    """Per row of ``logits`` [B, V]: s = sigmoid((logsumexp(x[yes]) - logsumexp(x[no])) / tau),
    reward = s if s >= delta else 0 (0 when both sides are -inf), and the softmax mass of the
    yes and no ids (each id once)."""
    yes, no = list(dict.fromkeys(yes_ids)), list(dict.fromkeys(no_ids))
    rewards, masses = [], []
    for row in logits.detach().double():
        gap = torch.logsumexp(row[yes], 0) - torch.logsumexp(row[no], 0)
        s = torch.sigmoid(gap / tau).item()
        rewards.append(s if s >= delta else 0.0)  # NaN (both sides -inf) fails the test: 0
        masses.append(torch.softmax(row, 0)[yes + no].sum().item())
    return (torch.tensor(rewards, dtype=torch.float64, device=logits.device),
            torch.tensor(masses, dtype=torch.float64, device=logits.device))
