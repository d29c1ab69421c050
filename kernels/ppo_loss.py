"""Clipped PPO surrogate + clipped value loss on per-token tensors, with the gradients written in
the forward pass.

Per valid token (``docs/method.md``, "PPO"), with rho = exp(min(logp - logp_old, 20)):

    policy  = max(-A * rho, -A * clip(rho, 1 - clip, 1 + clip_high))   (clip_high = clip unless set)
              (dual clip c: for A < 0, min(policy, -A * c), as in verl)
    value   = 0.5 * max((V - R)^2, (clip(V, V_old - value_clip, V_old + value_clip) - R)^2)
    loss    = reduce(policy) + vf_coef * reduce(value)     (no value term at all if vf_coef == 0)

The bounded ratio (``LOG_RATIO_MAX`` = 20 in ``_common``; log-probs from another engine can be
far apart): ``exp`` overflows fp32 above a log-ratio of ~88.7, and ``-A * inf`` is NaN where
A = 0 (a GRPO group with equal rewards). Beyond the bound rho = e^20 ~ 4.9e8 and is flat (zero
gradient). What that means, per token with log-ratio d:

* exact for every d: A = 0 (loss 0, gradient 0); A > 0 (beyond log(1 + clip_high) the clipped
  value -A (1 + clip_high), zero gradient); A < 0 with a dual clip c (beyond log c the cap -A c,
  zero gradient). (As long as 1 + clip_high and c are below e^20.)
* bounded: A < 0 without a dual clip and d > 20 gives -A e^20 with zero gradient, where the
  exact -A e^d (finite up to d ~ 88) has a gradient of the same size.
* a NaN log-prob at a valid token stays NaN in the loss (the bound hides nothing).
Stats: ``approx_kl`` uses the unbounded log-ratio, ``ratio_mean`` the bounded ratio.

``reduction="seq-mean-token-mean"`` (ReFT's) averages over each row's valid tokens and then over
the rows that have any valid token; ``"token-mean"`` averages over all valid tokens of the batch.
Rows with no valid token contribute nothing (the result equals dropping them; ReFT's code instead
divides by all B rows), and garbage (even NaN) under the mask is never read.

The forward kernel reads each input once (the mask twice: row lengths first) and writes
d(loss)/d(logp) and d(loss)/d(V) up to the global 1/denominator, plus one row of partial sums per
program; a one-program kernel reduces the partials in a fixed order (deterministic, no atomics)
into the loss and the stats. Backward is one elementwise pass: stored gradient * grad_output /
denominator, in the inputs' dtypes.
"""

from __future__ import annotations

import torch

from ._common import (
    HAS_TRITON,
    LOG_RATIO_MAX,
    MASK_DTYPES,
    check_nonempty,
    check_range,
    check_reduction,
    check_same,
    check_tensor,
    custom_op,
    mask_arg,
    next_pow2,
    reduce_tokens,
    resolve_backend,
    row_blocks,
    rows_arg,
)

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["STAT_NAMES", "ppo_loss", "ppo_loss_reference"]

# Stats, each reduced like the loss. clip_frac: share of tokens whose clipped surrogate is the
# larger (the ratio is clipped); approx_kl: 0.5 * (logp - logp_old)^2 (TRL, ReFT).
STAT_NAMES = ("policy_loss", "value_loss", "clip_frac", "approx_kl", "value_clip_frac",
              "dual_clip_frac", "ratio_mean")
# The kernels' partial sums and stats vector hold these 7 stats then the denominator (8 floats).


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:
    _LOG_RATIO_MAX = tl.constexpr(LOG_RATIO_MAX)

    @triton.jit
    def _ppo_fwd_kernel(
        LP, OLP, ADV, M, V, OV, RET, GLP, GV, PART,
        B, T, s_lp, s_olp, s_adv, s_m, s_v, s_ov, s_ret,
        clip_lo, clip_hi, value_clip, vf_coef, dual_clip, NUM_CHUNKS,
        HAS_MASK: tl.constexpr, HAS_VALUES: tl.constexpr, HAS_OLD_VALUES: tl.constexpr,
        DUAL: tl.constexpr, SEQ_MEAN: tl.constexpr, NEED_GRAD: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows[:, None] < B
        rows64 = rows.to(tl.int64)[:, None]  # B * T may exceed 2**31
        cols = tl.arange(0, BLOCK_T)[None, :]

        # valid tokens per row, needed up front to scale the per-sequence gradients
        n = tl.zeros([BLOCK_B], tl.float32)
        for k in range(NUM_CHUNKS):
            t = k * BLOCK_T + cols
            ok = row_ok & (t < T)
            if HAS_MASK:
                ok = ok & (tl.load(M + rows64 * s_m + t, mask=ok, other=0) != 0)
            n += tl.sum(ok.to(tl.float32), 1)
        if SEQ_MEAN:  # each non-empty row weighs 1, its tokens 1/n
            scale = tl.where(n > 0, 1.0 / tl.maximum(n, 1.0), 0.0)
            weight = tl.where(n > 0, 1.0, 0.0)
        else:         # each token weighs 1
            scale = tl.full([BLOCK_B], 1.0, tl.float32)
            weight = n

        pol = tl.zeros([BLOCK_B], tl.float32)
        val = tl.zeros([BLOCK_B], tl.float32)
        clipped = tl.zeros([BLOCK_B], tl.float32)
        kl = tl.zeros([BLOCK_B], tl.float32)
        vclipped = tl.zeros([BLOCK_B], tl.float32)
        dclipped = tl.zeros([BLOCK_B], tl.float32)
        ratios = tl.zeros([BLOCK_B], tl.float32)
        for k in range(NUM_CHUNKS):
            t = k * BLOCK_T + cols
            ok = row_ok & (t < T)
            valid = ok
            if HAS_MASK:
                valid = ok & (tl.load(M + rows64 * s_m + t, mask=ok, other=0) != 0)
            lp = tl.load(LP + rows64 * s_lp + t, mask=valid, other=0.0).to(tl.float32)
            olp = tl.load(OLP + rows64 * s_olp + t, mask=valid, other=0.0).to(tl.float32)
            a = tl.load(ADV + rows64 * s_adv + t, mask=valid, other=0.0).to(tl.float32)
            log_ratio = lp - olp
            # bounded (module docstring); NaN stays NaN, so corrupt log-probs still show
            bounded = log_ratio > _LOG_RATIO_MAX
            ratio = tl.exp(tl.minimum(log_ratio, _LOG_RATIO_MAX,
                                      propagate_nan=tl.PropagateNan.ALL))
            pg1 = -a * ratio
            pg2 = -a * tl.minimum(tl.maximum(ratio, clip_lo), clip_hi)
            pg = tl.maximum(pg1, pg2, propagate_nan=tl.PropagateNan.ALL)
            # d pg / d logp = -A * rho on the unclipped branch; the clipped one and the bounded
            # ratio are flat in logp
            g = tl.where((pg2 > pg1) | bounded, 0.0, pg1)
            if DUAL:
                pg3 = -a * dual_clip
                lower = (a < 0) & (pg3 < pg)
                pg = tl.where(lower, pg3, pg)
                g = tl.where(lower, 0.0, g)
                dclipped += tl.sum(tl.where(valid & lower, 1.0, 0.0), 1)
            pol += tl.sum(tl.where(valid, pg, 0.0), 1)
            clipped += tl.sum(tl.where(valid & (pg2 > pg1), 1.0, 0.0), 1)
            kl += tl.sum(tl.where(valid, 0.5 * log_ratio * log_ratio, 0.0), 1)
            ratios += tl.sum(tl.where(valid, ratio, 0.0), 1)
            out = rows64 * T + t  # gradient buffers are contiguous [B, T]
            if NEED_GRAD:
                tl.store(GLP + out, tl.where(valid, g * scale[:, None], 0.0), mask=ok)

            if HAS_VALUES:
                v = tl.load(V + rows64 * s_v + t, mask=valid, other=0.0).to(tl.float32)
                r = tl.load(RET + rows64 * s_ret + t, mask=valid, other=0.0).to(tl.float32)
                err = v - r
                vf = err * err
                gv = err
                if HAS_OLD_VALUES:
                    ov = tl.load(OV + rows64 * s_ov + t, mask=valid, other=0.0).to(tl.float32)
                    err_c = tl.minimum(tl.maximum(v, ov - value_clip), ov + value_clip) - r
                    vf_c = err_c * err_c
                    vclipped += tl.sum(tl.where(valid & (vf_c > vf), 1.0, 0.0), 1)
                    gv = tl.where(vf >= vf_c, err, 0.0)  # the clipped branch is flat in V
                    vf = tl.maximum(vf, vf_c)
                val += tl.sum(tl.where(valid, 0.5 * vf, 0.0), 1)
                if NEED_GRAD:  # vf_coef == 0: no value term, not 0 * (a possibly inf) gradient
                    gv = tl.where(valid & (vf_coef != 0.0), gv * (scale * vf_coef)[:, None], 0.0)
                    tl.store(GV + out, gv, mask=ok)

        # one row of partial sums per program, reduced by _ppo_finalize_kernel
        part = PART + pid * 8
        tl.store(part + 0, tl.sum(pol * scale, 0))
        tl.store(part + 1, tl.sum(val * scale, 0))
        tl.store(part + 2, tl.sum(clipped * scale, 0))
        tl.store(part + 3, tl.sum(kl * scale, 0))
        tl.store(part + 4, tl.sum(vclipped * scale, 0))
        tl.store(part + 5, tl.sum(dclipped * scale, 0))
        tl.store(part + 6, tl.sum(ratios * scale, 0))
        tl.store(part + 7, tl.sum(weight, 0))

    @triton.jit
    def _ppo_finalize_kernel(PART, LOSS, STATS, P, vf_coef, BLOCK_P: tl.constexpr):
        # STATS = [stat_0 .. stat_6, 1/denominator]; summed in a fixed order: deterministic
        idx = tl.arange(0, 8)
        acc = tl.zeros([BLOCK_P, 8], tl.float32)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)[:, None]
            acc += tl.load(PART + p * 8 + idx[None, :], mask=p < P, other=0.0)
        tot = tl.sum(acc, 0)
        denom = tl.sum(tl.where(idx == 7, tot, 0.0), 0)
        inv = tl.where(denom > 0, 1.0 / tl.maximum(denom, 1e-30), 0.0)
        means = tl.where(idx == 7, inv, tot * inv)
        tl.store(STATS + idx, means)
        pol = tl.sum(tl.where(idx == 0, means, 0.0), 0)
        val = tl.sum(tl.where(idx == 1, means, 0.0), 0)
        tl.store(LOSS, pol + tl.where(vf_coef != 0.0, vf_coef * val, 0.0))

    @triton.jit
    def _ppo_bwd_kernel(GRAD, STATS, GLP, GV, DLP, DV, N, HAS_VALUES: tl.constexpr,
                        BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < N
        scale = tl.load(GRAD).to(tl.float32) * tl.load(STATS + 7)
        tl.store(DLP + offs, tl.load(GLP + offs, mask=ok, other=0.0) * scale, mask=ok)
        if HAS_VALUES:
            tl.store(DV + offs, tl.load(GV + offs, mask=ok, other=0.0) * scale, mask=ok)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
def _ppo_fwd_triton(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    mask: torch.Tensor | None, values: torch.Tensor | None, old_values: torch.Tensor | None,
    returns: torch.Tensor | None, clip: float, clip_high: float, value_clip: float,
    vf_coef: float, dual_clip: float | None, seq_mean: bool, need_grad: bool,
    block: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss [], stats [8], grad_logp [B,T] fp32, grad_values [B,T] fp32 or [0]); the gradients
    lack the 1/denominator that the backward applies (the stats' last entry)."""
    b, t = logprobs.shape
    dev = logprobs.device
    lp, olp, adv = rows_arg(logprobs), rows_arg(old_logprobs), rows_arg(advantages)
    m = mask_arg(mask, lp)
    has_v = values is not None
    v = rows_arg(values) if has_v else lp
    ret = rows_arg(returns) if has_v else lp
    ov = rows_arg(old_values) if has_v and old_values is not None else lp
    f32 = dict(dtype=torch.float32, device=dev)
    glp = torch.empty((b, t) if need_grad else (0,), **f32)
    gv = torch.empty((b, t) if need_grad and has_v else (0,), **f32)  # outputs never alias
    block_b, block_t, chunks, warps = row_blocks(b, t, dev, block)
    nprog = triton.cdiv(b, block_b)
    part = torch.empty(nprog, 8, dtype=torch.float32, device=dev)
    _ppo_fwd_kernel[(nprog,)](
        lp, olp, adv, m, v, ov, ret, glp, gv, part,
        b, t, lp.stride(0), olp.stride(0), adv.stride(0), m.stride(0), v.stride(0),
        ov.stride(0), ret.stride(0),
        1.0 - clip, 1.0 + clip_high, value_clip, vf_coef, dual_clip or 0.0, chunks,
        HAS_MASK=mask is not None, HAS_VALUES=has_v,
        HAS_OLD_VALUES=has_v and old_values is not None, DUAL=dual_clip is not None,
        SEQ_MEAN=seq_mean, NEED_GRAD=need_grad, BLOCK_B=block_b, BLOCK_T=block_t,
        num_warps=warps,
    )
    loss = torch.empty((), dtype=torch.float32, device=dev)
    stats = torch.empty(8, dtype=torch.float32, device=dev)
    _ppo_finalize_kernel[(1,)](part, loss, stats, nprog, vf_coef,
                               BLOCK_P=min(next_pow2(nprog), 256))
    return loss, stats, glp, gv


def _ppo_bwd_triton(grad_loss: torch.Tensor, stats: torch.Tensor, glp: torch.Tensor,
                    gv: torch.Tensor, lp_dtype: torch.dtype, v_dtype: torch.dtype
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    has_v = gv.numel() > 0
    dlp = torch.empty(glp.shape, dtype=lp_dtype, device=glp.device)
    dv = torch.empty(gv.shape, dtype=v_dtype, device=gv.device) if has_v else dlp
    n = glp.numel()
    block = min(next_pow2(n), 2048 if glp.is_cuda else 1 << 16)
    _ppo_bwd_kernel[(triton.cdiv(n, block),)](
        grad_loss, stats, glp, gv, dlp, dv, n, HAS_VALUES=has_v, BLOCK=block,
        num_warps=min(8, max(1, block // 256)),
    )
    return dlp, (dv if has_v else torch.empty_like(gv))  # outputs never alias inputs


# --------------------------------------------------------------------------------------------------
# Registered ops (opaque to torch.compile) and autograd
# --------------------------------------------------------------------------------------------------
# torch.compile sees forward and backward as two opaque ops with shape-only fakes.
@custom_op("rlkd_fast::ppo_loss_fwd", mutates_args=())
def _ppo_fwd_op(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    mask: torch.Tensor | None, values: torch.Tensor | None, old_values: torch.Tensor | None,
    returns: torch.Tensor | None, clip: float, clip_high: float, value_clip: float,
    vf_coef: float, dual_clip: float | None, seq_mean: bool, need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _ppo_fwd_triton(logprobs, old_logprobs, advantages, mask, values, old_values,
                           returns, clip, clip_high, value_clip, vf_coef, dual_clip, seq_mean,
                           need_grad)


@_ppo_fwd_op.register_fake
def _(logprobs, old_logprobs, advantages, mask, values, old_values, returns, clip, clip_high,
      value_clip, vf_coef, dual_clip, seq_mean, need_grad):
    f32 = dict(dtype=torch.float32, device=logprobs.device)
    shape = logprobs.shape if need_grad else (0,)
    vshape = shape if values is not None else (0,)
    return (torch.empty((), **f32), torch.empty(8, **f32), torch.empty(shape, **f32),
            torch.empty(vshape, **f32))


@custom_op("rlkd_fast::ppo_loss_bwd", mutates_args=())
def _ppo_bwd_op(grad_loss: torch.Tensor, stats: torch.Tensor, glp: torch.Tensor,
                gv: torch.Tensor, lp_dtype: torch.dtype, v_dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    return _ppo_bwd_triton(grad_loss, stats, glp, gv, lp_dtype, v_dtype)


@_ppo_bwd_op.register_fake
def _(grad_loss, stats, glp, gv, lp_dtype, v_dtype):
    dv = torch.empty(gv.shape, dtype=v_dtype if gv.numel() else gv.dtype, device=gv.device)
    return torch.empty(glp.shape, dtype=lp_dtype, device=glp.device), dv


def _setup_context(ctx, inputs, output):
    logprobs, values = inputs[0], inputs[4]
    _, stats, glp, gv = output
    ctx.mark_non_differentiable(stats, glp, gv)
    ctx.set_materialize_grads(False)  # no zero-filled [B,T] grads for the buffers' outputs
    ctx.save_for_backward(stats, glp, gv)
    ctx.lp_dtype = logprobs.dtype
    ctx.v_dtype = values.dtype if values is not None else torch.float32
    ctx.has_values = values is not None


def _backward_with(bwd, ctx, grad_loss):
    stats, glp, gv = ctx.saved_tensors
    if glp.numel() == 0:
        raise RuntimeError("ppo_loss: no gradient was stored; call it with grad mode on and an "
                           "input that requires grad")
    dlp, dv = bwd(grad_loss, stats, glp, gv, ctx.lp_dtype, ctx.v_dtype)
    return (dlp, None, None, None, dv if ctx.has_values else None, *[None] * 9)


def _backward(ctx, grad_loss, _grad_stats, _grad_glp, _grad_gv):
    return _backward_with(_ppo_bwd_op, ctx, grad_loss)


_ppo_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _PPOLoss(torch.autograd.Function):
    """The same forward and backward without the custom-op dispatch, for eager calls (the
    dispatcher's Python overhead is a noticeable share of a ~20 us step)."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _ppo_fwd_triton(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats, _grad_glp, _grad_gv):
        return _backward_with(_ppo_bwd_triton, ctx, grad_loss)


# --------------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------------
def ppo_loss_reference(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    mask: torch.Tensor | None, values: torch.Tensor | None = None,
    old_values: torch.Tensor | None = None, returns: torch.Tensor | None = None,
    clip: float = 0.2, clip_high: float | None = None, dual_clip: float | None = None,
    value_clip: float = 0.2, vf_coef: float = 0.1, reduction: str = "seq-mean-token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`ppo_loss` in plain PyTorch, differentiable by autograd.

    Computes in float64 when ``logprobs`` is float64 (the loss and stats are then float64),
    float32 otherwise.
    """
    dt = torch.float64 if logprobs.dtype == torch.float64 else torch.float32
    valid = torch.ones_like(logprobs, dtype=torch.bool) if mask is None else mask != 0
    zero = torch.zeros((), dtype=dt, device=logprobs.device)

    def take(x: torch.Tensor) -> torch.Tensor:  # masked entries never reach the math
        return torch.where(valid, x.to(dt), zero)

    def reduce(x: torch.Tensor) -> torch.Tensor:
        return reduce_tokens(take(x), valid, reduction)

    a = take(advantages)
    log_ratio = take(logprobs) - take(old_logprobs)
    ratio = torch.exp(log_ratio.clamp(max=LOG_RATIO_MAX))  # flat beyond the bound, NaN kept
    high = clip if clip_high is None else clip_high
    pg1, pg2 = -a * ratio, -a * ratio.clamp(1 - clip, 1 + high)
    pg = torch.maximum(pg1, pg2)
    lower = torch.zeros_like(valid)
    if dual_clip is not None:
        pg3 = -a * dual_clip
        lower = (a < 0) & (pg3 < pg)
        pg = torch.where(lower, pg3, pg)
    policy = reduce(pg)
    value = zero
    vclipped = torch.zeros_like(valid)
    if values is not None:
        v, r = take(values), take(returns)
        vf = (v - r) ** 2
        if old_values is not None:
            ov = take(old_values)
            vf_c = (torch.minimum(torch.maximum(v, ov - value_clip), ov + value_clip) - r) ** 2
            vclipped = vf_c > vf
            vf = torch.maximum(vf, vf_c)
        value = reduce(0.5 * vf)
    loss = policy + vf_coef * value if vf_coef != 0 else policy  # 0 * inf would be NaN
    with torch.no_grad():
        stats = dict(zip(STAT_NAMES, (
            policy, value, reduce((pg2 > pg1).to(dt)), reduce(0.5 * log_ratio ** 2),
            reduce(vclipped.to(dt)), reduce(lower.to(dt)), reduce(ratio)), strict=True))
    return loss, {k: s.detach() for k, s in stats.items()}


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------
def _check(logprobs, old_logprobs, advantages, mask, values, old_values, returns, clip,
           clip_high, dual_clip, value_clip, vf_coef, reduction) -> None:
    for name, x in (("logprobs", logprobs), ("old_logprobs", old_logprobs),
                    ("advantages", advantages), ("values", values), ("old_values", old_values),
                    ("returns", returns)):
        if x is not None:
            check_tensor(name, x, ndim=2)
    if mask is not None:
        check_tensor("mask", mask, ndim=2, dtypes=MASK_DTYPES)
    check_same("logprobs", logprobs, old_logprobs=old_logprobs, advantages=advantages,
               mask=mask, values=values, old_values=old_values, returns=returns)
    check_nonempty("logprobs", logprobs)
    if (values is None) != (returns is None):
        raise ValueError("values and returns go together: pass both for a value loss, or neither")
    if old_values is not None and values is None:
        raise ValueError("old_values given without values")
    check_reduction(reduction)
    check_range("clip", clip, 0.0, float("inf"))
    if clip_high is not None:
        check_range("clip_high", clip_high, 0.0, float("inf"))
    check_range("value_clip", value_clip, 0.0, float("inf"))
    check_range("vf_coef", vf_coef, 0.0, float("inf"))
    if dual_clip is not None and not float(dual_clip) > 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")


def ppo_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    mask: torch.Tensor | None, values: torch.Tensor | None = None,
    old_values: torch.Tensor | None = None, returns: torch.Tensor | None = None,
    clip: float = 0.2, clip_high: float | None = None, dual_clip: float | None = None,
    value_clip: float = 0.2, vf_coef: float = 0.1, reduction: str = "seq-mean-token-mean",
    backend: str = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate + clipped value loss, differentiable w.r.t. logprobs and values.

    Args:
        logprobs: [B, T] log-probs of the taken tokens under the current policy (requires grad),
            fp16/bf16/fp32/fp64.
        old_logprobs, advantages: [B, T], constants (no gradient), any float dtype.
        mask: [B, T] bool/int/float, nonzero = valid token; None = all valid.
        values: [B, T] current value predictions (requires grad), or None for no value loss.
        old_values: [B, T] the rollout's values; with them the value is clipped to
            ``old_values +- value_clip``; None = unclipped value loss.
        returns: [B, T] value targets; required with ``values``.
        clip: PPO ratio clip epsilon (>= 0): the ratio is clipped to [1 - clip, 1 + clip_high].
            The ratio itself is ``exp(min(logp - old_logprobs, 20))``: exact wherever the
            selected branch needs no ratio above e^20, see the module docstring.
        clip_high: upper clip epsilon (>= 0; DAPO's clip-higher); None = ``clip``.
        dual_clip: None, or c > 1 to bound the loss of negative-advantage tokens by -A * c.
        value_clip: >= 0. vf_coef: value-loss weight (>= 0); 0 leaves the value term out of
            the loss and its gradient entirely (the ``value_loss`` stat is still reported).
        reduction: "seq-mean-token-mean" (mean over each row's valid tokens, then over the rows
            that have any) or "token-mean" (mean over all valid tokens).
        backend: "auto" | "triton" | "torch".

    Returns:
        loss: fp32 scalar, ``policy_loss + vf_coef * value_loss``.
        stats: dict of fp32 scalar tensors (detached; no host sync is made): policy_loss,
            value_loss, clip_frac, approx_kl (0.5 (logp - old)^2, unbounded), value_clip_frac,
            dual_clip_frac, ratio_mean (of the bounded ratio), each reduced like the loss.
    Gradients reach ``logprobs`` and ``values`` only, in their own dtypes.
    """
    _check(logprobs, old_logprobs, advantages, mask, values, old_values, returns, clip,
           clip_high, dual_clip, value_clip, vf_coef, reduction)
    if resolve_backend(backend, logprobs) == "torch":
        loss, stats = ppo_loss_reference(
            logprobs, old_logprobs.detach(), advantages.detach(), mask, values,
            None if old_values is None else old_values.detach(),
            None if returns is None else returns.detach(),
            clip=clip, clip_high=clip_high, dual_clip=dual_clip, value_clip=value_clip,
            vf_coef=vf_coef, reduction=reduction)
        return loss.float(), {k: s.float() for k, s in stats.items()}

    need_grad = torch.is_grad_enabled() and (
        logprobs.requires_grad or (values is not None and values.requires_grad))
    fwd = _ppo_fwd_op if torch.compiler.is_compiling() else _PPOLoss.apply
    loss, stats, _, _ = fwd(
        logprobs, old_logprobs.detach(), advantages.detach(),
        None if mask is None else mask.detach(), values,
        None if old_values is None else old_values.detach(),
        None if returns is None else returns.detach(),
        float(clip), float(clip if clip_high is None else clip_high), float(value_clip),
        float(vf_coef),
        None if dual_clip is None else float(dual_clip), reduction != "token-mean", need_grad)
    return loss, dict(zip(STAT_NAMES, stats.unbind(0), strict=False))
