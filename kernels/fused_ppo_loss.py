"""Clipped PPO / GRPO loss straight from the logits, with the logits' gradient in the same pass.

Per valid token (``mask != 0``), with ``logp = log_softmax(logits / T)[id]`` and
``ratio = exp(min(logp - old_logprobs, 20))``:

    pg      = max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip_high))
              (dual clip, A < 0: pg = min(pg, -A * dual_clip))
    kl      = logp - ref                               (k1)
            = exp(d) - d - 1,  d = min(ref - logp, 20) (k3)
    entropy = -sum_v p_v log p_v                       (0 log 0 = 0: -inf logits add nothing)
    loss_t  = pg + kl_coef * kl - entropy_coef * entropy

A zero coefficient leaves its term out of the loss and the gradient altogether (0 * inf would be
NaN); the ``kl`` and ``entropy`` stats are still reported.

Both exponentiated log-ratios are bounded at ``LOG_RATIO_MAX`` = 20 (``_common``), since exp
overflows fp32 above ~88.7 and inf turns into NaN when multiplied by 0 (A = 0 in a GRPO group
with equal rewards). Beyond the bound the value is flat (zero gradient). The policy term is
therefore exact for every log-ratio where its selected branch needs no ratio above e^20 (A = 0;
A > 0, clipped at 1 + clip_high; A < 0 under a dual clip, capped at -A * dual_clip) and bounded
at -A e^20 with zero gradient only for A < 0 without a dual clip; k3 is exact up to
ref - logp = 20 and e^20 - 21 with zero gradient beyond (k1 needs no bound). ``ratio_mean``
reports the bounded ratio, ``approx_kl`` the unbounded log-ratio; a NaN log-prob stays NaN.

The loss is reduced by ``"token-mean"`` (mean over all valid tokens) or
``"seq-mean-token-mean"`` (mean over each sequence's valid tokens, then over the sequences that
have any; ReFT's). Sequences with no valid token contribute nothing, and an all-masked batch
gives a loss of 0.

The kernel reads each vocabulary row twice: pass 1 computes the online max / sum-exp (and the
entropy sum), pass 2 re-reads the row, last chunk first while it is still in L2, and writes the
gradient ``dL/dlogp * (onehot - p) + entropy term``. Backward then only scales that stored
gradient by the incoming scalar (skipped on the device when it is 1). Rows whose tokens are all
masked are not read at all: their gradient is written as zeros.
"""

from __future__ import annotations

import torch

from . import _logits
from ._common import (
    HAS_TRITON,
    LOG_RATIO_MAX,
    as_mask,
    check_reduction,
    check_tensor,
    custom_op,
    reduce_tokens,
)

__all__ = ["STAT_NAMES", "fused_ppo_loss", "fused_ppo_loss_reference"]

KL_ESTIMATORS = ("k3", "k1")
# Stats, each reduced like the loss (as ppo_loss's): clip_frac = share of tokens whose ratio is
# clipped, dual_clip_frac = share capped by the dual clip, approx_kl = 0.5 (logp - old)^2.
STAT_NAMES = ("policy_loss", "kl", "entropy", "clip_frac", "approx_kl", "dual_clip_frac",
              "ratio_mean")
N_STATS = len(STAT_NAMES)

if HAS_TRITON:
    import triton
    import triton.language as tl


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:
    _LN2 = tl.constexpr(_logits.LN2)
    _N_STATS = tl.constexpr(N_STATS)
    _LOG_RATIO_MAX = tl.constexpr(LOG_RATIO_MAX)

    @triton.jit
    def _fused_ppo_fwd_kernel(
        logits_ptr, grad_ptr,            # [B,T,V] (strides sb, st, 1), [B*T, V] contiguous
        ids_ptr, old_ptr, adv_ptr, ref_ptr, w_ptr,  # [N] each ([B] for per-sequence advantages)
        logp_ptr, stats_ptr,             # [N] f32, [N_STATS, N] f32
        N, T, V, stride_b, stride_t, k, inv_temp,
        clip_lo, clip_hi, dual_clip, kl_coef, ent_coef,
        ADV_PER_SEQ: tl.constexpr, HAS_REF: tl.constexpr, KL_K3: tl.constexpr,
        HAS_KL: tl.constexpr, HAS_DUAL: tl.constexpr, HAS_ENT: tl.constexpr,
        WRITE_GRAD: tl.constexpr,
        SUB: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < N
        dst = rows.to(tl.int64) * V
        w = tl.load(w_ptr + rows, mask=row_ok, other=0.0)  # reduction weight, 0 where masked
        valid = w != 0
        if tl.max(valid.to(tl.int32), 0) == 0:
            if WRITE_GRAD:
                _logits.write_zeros(grad_ptr, dst, row_ok, V, BLOCK_R, BLOCK_V)
            zero = tl.zeros([BLOCK_R], tl.float32)
            tl.store(logp_ptr + rows, zero, mask=row_ok)
            for j in tl.static_range(_N_STATS):
                tl.store(stats_ptr + j * N + rows, zero, mask=row_ok)
        else:
            src = _logits.row_offsets(rows, T, stride_b, stride_t)
            ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
            m, s, t = _logits.online_softmax(logits_ptr, src, row_ok, V, k, BLOCK_R, BLOCK_V, SUB)
            lse2 = m * k + tl.log2(s)
            x_id = _logits.gather_logit(logits_ptr, src, ids, row_ok, V)
            ent = tl.where(valid, (tl.log2(s) - t / s) * _LN2, 0.0)
            old = tl.load(old_ptr + rows, mask=row_ok, other=0.0)
            # masked rows take the old log-prob: their (discarded) terms stay finite
            logp = tl.where(valid, (x_id * k - lse2) * _LN2, old)
            adv_idx = rows // T if ADV_PER_SEQ else rows
            adv = tl.load(adv_ptr + adv_idx, mask=row_ok, other=0.0)
            # bounded (module docstring); NaN stays NaN, so corrupt log-probs still show
            bounded = logp - old > _LOG_RATIO_MAX
            ratio = tl.exp(tl.minimum(logp - old, _LOG_RATIO_MAX,
                                      propagate_nan=tl.PropagateNan.ALL))
            pg1 = -adv * ratio
            pg2 = -adv * tl.minimum(tl.maximum(ratio, clip_lo), clip_hi)
            clipped = pg2 > pg1
            pg = tl.where(clipped, pg2, pg1)
            dual = tl.zeros([BLOCK_R], tl.int1)
            if HAS_DUAL:
                cap = -adv * dual_clip
                dual = (adv < 0) & (pg > cap)
                pg = tl.where(dual, cap, pg)
            # d(-A ratio)/dlogp = -A ratio; 0 once clipped, capped or bounded
            dpg = tl.where(clipped | dual | bounded, 0.0, pg1)

            if HAS_REF:
                ref = tl.load(ref_ptr + rows, mask=row_ok, other=0.0)
                d = ref - logp
                if KL_K3:  # bounded as the ratio is
                    dc = tl.minimum(d, _LOG_RATIO_MAX, propagate_nan=tl.PropagateNan.ALL)
                    ed = tl.exp(dc)
                    kl = ed - dc - 1.0
                    dkl = tl.where(d > _LOG_RATIO_MAX, 0.0, 1.0 - ed)
                else:
                    kl = -d
                    dkl = tl.full([BLOCK_R], 1.0, tl.float32)
            else:
                kl = tl.zeros([BLOCK_R], tl.float32)
                dkl = tl.zeros([BLOCK_R], tl.float32)

            # grad_x = a * onehot - p * (c0 + bx * x), see _write_grad; the entropy term is
            # dH/dz = -p (log p + H), z = x / T. A zero coefficient's term is left out.
            if WRITE_GRAD:
                dlogp = dpg
                if HAS_KL:
                    dlogp += kl_coef * dkl
                a = tl.where(valid, w * dlogp * inv_temp, 0.0)
                c0 = a
                bx = a  # unused without the entropy term
                if HAS_ENT:
                    e = w * ent_coef * inv_temp
                    c0 = a + e * (lse2 * _LN2 - ent)
                    bx = -e * inv_temp
                _logits.write_grad(logits_ptr, grad_ptr, src, dst, ids, x_id, row_ok, V, k,
                                   lse2, a, c0, bx, HAS_ENT, BLOCK_R, BLOCK_V)

            tl.store(logp_ptr + rows, tl.where(valid, logp, 0.0), mask=row_ok)
            tl.store(stats_ptr + rows, tl.where(valid, pg, 0.0), mask=row_ok)
            tl.store(stats_ptr + N + rows, tl.where(valid, kl, 0.0), mask=row_ok)
            tl.store(stats_ptr + 2 * N + rows, ent, mask=row_ok)
            tl.store(stats_ptr + 3 * N + rows, (valid & clipped).to(tl.float32), mask=row_ok)
            dlp = logp - old
            tl.store(stats_ptr + 4 * N + rows, tl.where(valid, 0.5 * dlp * dlp, 0.0),
                     mask=row_ok)
            tl.store(stats_ptr + 5 * N + rows, (valid & dual).to(tl.float32), mask=row_ok)
            tl.store(stats_ptr + 6 * N + rows, tl.where(valid, ratio, 0.0), mask=row_ok)

    _fused_tuned = _logits.tuned(_fused_ppo_fwd_kernel)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
def _fused_ppo_triton(
    logits: torch.Tensor, ids: torch.Tensor, old_logprobs: torch.Tensor,
    advantages: torch.Tensor, weights: torch.Tensor, ref_logprobs: torch.Tensor | None,
    clip_low: float, clip_high: float, dual_clip: float, kl_coef: float, kl_k3: bool,
    entropy_coef: float, temperature: float, need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One launch: (per-token stats [N_STATS, B*T] f32 (0 where masked), logp [B,T] f32, the
    logits' gradient [B,T,V] in their dtype up to the incoming scalar (empty [0] unless
    ``need_grad``: then pass 2 is skipped)). ``weights`` [B,T] f32 are the reduction's per-token
    weights (0 where masked, see :func:`loss_weights`)."""
    x, T, sb, st = _logits.rows_view(logits)
    B, V = x.shape[0], x.shape[2]
    N = B * T
    grad = torch.empty((B, T, V) if need_grad else (0,), dtype=x.dtype, device=x.device)
    logp = torch.empty((B, T), dtype=torch.float32, device=x.device)
    per_token = torch.empty((N_STATS, N), dtype=torch.float32, device=x.device)
    f32 = lambda t: t.float().contiguous()
    ref = f32(ref_logprobs) if ref_logprobs is not None else logp  # dummy pointer when absent
    _logits.launch_rows(
        _fused_ppo_fwd_kernel, _fused_tuned, N, V,
        x, grad, ids.contiguous(), f32(old_logprobs), f32(advantages), ref, f32(weights),
        logp, per_token, N, T, V, sb, st, _logits.LOG2E / temperature, 1.0 / temperature,
        clip_low, clip_high, dual_clip, kl_coef, entropy_coef,
        ADV_PER_SEQ=advantages.dim() == 1, HAS_REF=ref_logprobs is not None, KL_K3=kl_k3,
        HAS_KL=ref_logprobs is not None and kl_coef != 0, HAS_DUAL=dual_clip > 0,
        HAS_ENT=entropy_coef != 0, WRITE_GRAD=need_grad, SUB=_logits.warp_width(x),
    )
    return per_token, logp, grad


def _combine(pg: torch.Tensor, kl: torch.Tensor, entropy: torch.Tensor, kl_coef: float,
             entropy_coef: float) -> torch.Tensor:
    """``pg + kl_coef * kl - entropy_coef * entropy`` without the terms whose coefficient is 0
    (0 * inf would be NaN); a new tensor, never a view of ``pg``."""
    loss = pg.clone()
    if kl_coef != 0:
        loss = loss + kl_coef * kl
    if entropy_coef != 0:
        loss = loss - entropy_coef * entropy
    return loss


def loss_weights(mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-token weights [B,T] f32 of the reduction over ``mask`` [B,T] f32 0/1 (sum to 1,
    or to 0 for an all-masked batch)."""
    if reduction == "token-mean":
        return mask / mask.sum().clamp(min=1)
    per_seq = mask.sum(-1, keepdim=True)
    n_seq = (per_seq > 0).sum().clamp(min=1)
    return mask / per_seq.clamp(min=1) / n_seq


# --------------------------------------------------------------------------------------------------
# Registered op and its autograd
# --------------------------------------------------------------------------------------------------
@custom_op("rlkd_fast::fused_ppo_loss")
def _fused_op(
    logits: torch.Tensor, ids: torch.Tensor, old_logprobs: torch.Tensor,
    advantages: torch.Tensor, weights: torch.Tensor,
    ref_logprobs: torch.Tensor | None, clip_low: float, clip_high: float, dual_clip: float,
    kl_coef: float, kl_k3: bool, entropy_coef: float, temperature: float, check_ids: bool,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (loss [] f32, stats [N_STATS] f32, logp [B,T] f32, grad [B,T,V] logits' dtype
    (empty [0] unless ``need_grad``)); see :func:`_fused_ppo_triton`."""
    per_token, logp, grad = _fused_ppo_triton(
        logits, ids, old_logprobs, advantages, weights, ref_logprobs, clip_low, clip_high,
        dual_clip, kl_coef, kl_k3, entropy_coef, temperature, need_grad)
    stats = per_token @ weights.reshape(-1).float()
    loss = _combine(stats[0], stats[1], stats[2], kl_coef, entropy_coef)
    if check_ids:  # last (the kernel never reads out of bounds): the sync overlaps the kernels
        _logits.check_ids_in_vocab(ids, logits.shape[-1], where=weights)
    return loss, stats, logp, grad


@_fused_op.register_fake
def _(logits, ids, old_logprobs, advantages, weights, ref_logprobs, clip_low,
      clip_high, dual_clip, kl_coef, kl_k3, entropy_coef, temperature, check_ids, need_grad):
    f32 = dict(dtype=torch.float32, device=logits.device)
    grad_shape = logits.shape if need_grad else (0,)
    return (torch.empty((), **f32), torch.empty(N_STATS, **f32), torch.empty(ids.shape, **f32),
            torch.empty(grad_shape, dtype=logits.dtype, device=logits.device))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[3])


def _backward(ctx, grad_loss, *_unused):
    (grad,) = ctx.saved_tensors
    # the stored gradient is ours alone: scale it in place, no copy and no host sync (a second
    # backward through the same forward then fails autograd's saved-tensor version check)
    _logits.scale_(grad, grad_loss.detach().float())
    return (grad,) + (None,) * 15


_fused_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------------
def fused_ppo_loss_reference(
    logits: torch.Tensor, ids: torch.Tensor, old_logprobs: torch.Tensor,
    advantages: torch.Tensor, mask: torch.Tensor | None, ref_logprobs: torch.Tensor | None = None,
    clip: float = 0.2, clip_high: float | None = None, dual_clip: float | None = None,
    kl_coef: float = 0.0, kl_estimator: str = "k3", entropy_coef: float = 0.0,
    temperature: float = 1.0, reduction: str = "seq-mean-token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Plain PyTorch (fp32, fp64 for fp64 logits; materialises [B,T,V]); same contract as
    ``fused_ppo_loss``, differentiable by autograd."""
    dt = torch.promote_types(logits.dtype, torch.float32)
    z = logits.to(dt) / temperature
    logp_all = torch.log_softmax(z, dim=-1)
    valid = as_mask(mask, ids) != 0
    safe_ids = torch.where(valid, ids.long(), 0)  # ids at masked positions may be anything
    logp = logp_all.gather(-1, safe_ids.unsqueeze(-1)).squeeze(-1)
    p = logp_all.exp()
    # 0 log 0 = 0: -inf logits (a masked, padded vocabulary) have p = 0 and add nothing, where
    # p * logp would be 0 * -inf = NaN (and so would its gradient)
    entropy = -(p * logp_all.masked_fill(p == 0, 0)).sum(-1)
    old = old_logprobs.to(dt)
    # masked positions take the old log-prob: their (discarded) terms stay finite, so no
    # 0 * inf = NaN reaches the gradient through torch.where
    logp_valid = torch.where(valid, logp, old)
    adv = advantages.to(dt)
    adv = adv[:, None].expand_as(logp) if adv.dim() == 1 else adv
    hi = clip if clip_high is None else clip_high

    ratio = torch.exp((logp_valid - old).clamp(max=LOG_RATIO_MAX))  # flat beyond, NaN kept
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - clip, 1 + hi)
    pg = torch.maximum(pg1, pg2)
    clipped = pg2 > pg1
    dual = torch.zeros_like(clipped)
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual = (adv < 0) & (pg > cap)
        pg = torch.where(dual, cap, pg)
    if ref_logprobs is None:
        kl = torch.zeros_like(logp)
    else:
        d = ref_logprobs.to(dt) - logp_valid
        if kl_estimator == "k3":
            d = d.clamp(max=LOG_RATIO_MAX)
            kl = torch.exp(d) - d - 1
        else:
            kl = -d
    per_token = _combine(pg, kl, entropy, kl_coef, entropy_coef)

    def reduce(x: torch.Tensor) -> torch.Tensor:  # masked positions may hold inf/NaN
        return reduce_tokens(x, valid, reduction)

    stats = {
        "policy_loss": reduce(pg), "kl": reduce(kl), "entropy": reduce(entropy),
        "clip_frac": reduce(clipped.to(dt)), "approx_kl": reduce(0.5 * (logp_valid - old) ** 2),
        "dual_clip_frac": reduce(dual.to(dt)), "ratio_mean": reduce(ratio),
    }
    stats = {k: v.detach().to(torch.float32 if dt != torch.float64 else dt)
             for k, v in stats.items()}
    stats["logprobs"] = torch.where(valid, logp, 0).detach()
    return reduce(per_token), stats


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------
def _check_args(logits, ids, old_logprobs, advantages, mask, ref_logprobs, clip, clip_high,
                dual_clip, kl_coef, kl_estimator, entropy_coef, temperature, reduction):
    _logits.check_logits_ids(logits, ids, ndims=3)
    B, T = ids.shape
    for name, t in (("old_logprobs", old_logprobs), ("mask", mask), ("ref_logprobs", ref_logprobs)):
        if t is None:
            continue
        check_tensor(name, t, dtypes=None)
        if tuple(t.shape) != (B, T):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {(B, T)} (ids' shape)")
        if t.device != logits.device:
            raise ValueError(f"{name} is on {t.device}, logits on {logits.device}")
    for name, t in (("old_logprobs", old_logprobs), ("ref_logprobs", ref_logprobs)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    check_tensor("advantages", advantages, ndim=(1, 2))
    if tuple(advantages.shape) not in ((B, T), (B,)):
        raise ValueError(f"advantages have shape {tuple(advantages.shape)}, expected {(B, T)} "
                         f"(per token) or {(B,)} (per sequence)")
    if advantages.device != logits.device:
        raise ValueError(f"advantages are on {advantages.device}, logits on {logits.device}")
    _logits.check_temperature(temperature)
    check_reduction(reduction)
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
    if clip < 0 or (clip_high is not None and clip_high < 0):
        raise ValueError(f"clip and clip_high must be >= 0, got {clip} and {clip_high}")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (a cap of dual_clip * |A|), got {dual_clip}")
    if kl_coef < 0 or entropy_coef < 0:
        raise ValueError(f"kl_coef and entropy_coef must be >= 0, got {kl_coef}, {entropy_coef}")
    if kl_coef != 0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")


def fused_ppo_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
    ref_logprobs: torch.Tensor | None = None,
    clip: float = 0.2,
    clip_high: float | None = None,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy_coef: float = 0.0,
    temperature: float = 1.0,
    reduction: str = "seq-mean-token-mean",
    check_ids: bool = True,
    backend: str = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped PPO/GRPO policy loss (+ KL to a reference, + entropy bonus) from the logits.

    Args:
        logits: [B, T, V] fp32/fp16/bf16 (fp64 runs the reference); the position t row scores
            ``ids[:, t]``. Views with a unit vocab stride (``logits[:, :-1]``) are read in place.
        ids: [B, T] int32/int64 sampled tokens, in [0, V) wherever ``mask`` is set.
        old_logprobs: [B, T] float, log-probs of ``ids`` under the sampling policy.
        advantages: [B, T] per token (PPO) or [B] per sequence (GRPO), float.
        mask: [B, T] bool/int/float (nonzero = valid token) or None (all valid).
        ref_logprobs: [B, T] float reference-model log-probs, or None (needed if kl_coef != 0).
        clip, clip_high: the ratio ``exp(min(logp - old_logprobs, 20))`` is clipped to
            [1 - clip, 1 + clip_high]; clip_high defaults to clip. dual_clip: > 1, caps the loss
            of negative-advantage tokens at ``-dual_clip * A``; None for none.
        kl_coef: weight (>= 0) of the KL-to-reference term; 0 leaves the term out of the loss
            and the gradient (the ``kl`` stat is still reported when ``ref_logprobs`` is given).
            kl_estimator: "k3" (its log-ratio bounded at 20, see the module docstring) or "k1".
        entropy_coef: weight (>= 0) of the entropy bonus (subtracted from the loss); 0 leaves
            it out of the loss and the gradient (the ``entropy`` stat is still reported).
        temperature: > 0; the logits are divided by it.
        reduction: "seq-mean-token-mean" (ReFT's) or "token-mean".
        check_ids: verify the ids at valid positions (one device-to-host sync).
        backend: "auto" | "triton" | "torch".

    Returns:
        ``(loss, stats)``: loss a 0-d float32 tensor, differentiable with respect to ``logits``
        only; stats a dict of detached float32 tensors, each reduced like the loss (as in
        ``ppo_loss``): ``policy_loss``, ``kl``, ``entropy``, ``clip_frac`` (ratio clipped),
        ``approx_kl`` (0.5 (logp - old)^2), ``dual_clip_frac``, ``ratio_mean``; and
        ``logprobs`` [B, T] (0 at masked positions).
        The logits' gradient is computed in the forward pass and held until backward (one
        [B, T, V] tensor in the logits' dtype), which scales it in place: one backward per
        forward (autograd refuses a second on the Triton path).
    """
    _check_args(logits, ids, old_logprobs, advantages, mask, ref_logprobs, clip, clip_high,
                dual_clip, kl_coef, kl_estimator, entropy_coef, temperature, reduction)
    hi = clip if clip_high is None else clip_high
    if _logits.pick_backend(backend, logits) == "torch":
        if check_ids:
            _logits.check_ids_in_vocab(ids, logits.shape[-1], where=as_mask(mask, ids))
        return fused_ppo_loss_reference(
            logits, ids, old_logprobs, advantages, mask, ref_logprobs, clip=clip, clip_high=hi,
            dual_clip=dual_clip, kl_coef=kl_coef, kl_estimator=kl_estimator,
            entropy_coef=entropy_coef, temperature=temperature, reduction=reduction)
    weights = loss_weights(as_mask(mask, ids), reduction)
    loss, stats, logp, _ = _fused_op(
        logits, ids, old_logprobs, advantages, weights, ref_logprobs,
        1.0 - float(clip), 1.0 + float(hi), float(dual_clip or 0.0), float(kl_coef),
        kl_estimator == "k3", float(entropy_coef), float(temperature), bool(check_ids),
        logits.requires_grad and torch.is_grad_enabled())
    out = {name: stats[i].detach() for i, name in enumerate(STAT_NAMES)}
    out["logprobs"] = logp.detach()
    return loss, out
