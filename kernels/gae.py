"""Generalised advantage estimation (GAE) with masks, as one reverse scan per row.

For the valid tokens s_0 < s_1 < ... of a row (``mask != 0``), with V after the last one = 0:

    delta_j = r_{s_j} + gamma * V_{s_{j+1}} - V_{s_j}
    A_{s_j} = delta_j + gamma * lam * A_{s_{j+1}},       R_{s_j} = A_{s_j} + V_{s_j}

Masked positions are skipped: they carry the next valid value and advantage through (so right
padding and masked spans inside a response both work), their rewards and values are never read,
and they get A = R = 0. Over all positions the recurrence is affine, S_t = c_t * S_{t+1} + d_t with
(c, d) = (gamma * lam, delta_t) on valid tokens and (1, 0) on masked ones, so the Triton kernel
runs ``tl.associative_scan(reverse=True)`` over (c, d) pairs; rows longer than one block are
scanned block by block from the end, carrying the next valid value and advantage between blocks.

GAE takes no gradient: rewards and values are treated as constants (the inputs are detached).
"""

from __future__ import annotations

import torch

from ._common import (
    HAS_TRITON,
    MASK_DTYPES,
    check_nonempty,
    check_range,
    check_same,
    check_tensor,
    custom_op,
    mask_arg,
    next_pow2,
    resolve_backend,
    row_blocks,
    rows_arg,
)

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["gae", "gae_reference", "masked_whiten"]

WHITEN_EPS = 1e-8  # added to the variance before the square root, as TRL and ReFT do


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:

    @triton.jit
    def _compose(c_later, d_later, c_now, d_now):
        # Affine maps x -> c * x + d. A reverse scan passes the span after t first, so the result
        # applies the later span, then position t: c_now * (c_later * x + d_later) + d_now.
        return c_later * c_now, c_now * d_later + d_now

    @triton.jit
    def _gae_kernel(
        R, V, M, ADV, RET, STATS,
        B, T, stride_r, stride_v, stride_m, stride_o,
        gamma, lam,
        HAS_MASK: tl.constexpr, WHITEN: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_T: tl.constexpr, NUM_CHUNKS,
    ):
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows[:, None] < B
        rows64 = rows.to(tl.int64)[:, None]  # B * T may exceed 2**31
        cols = tl.arange(0, BLOCK_T)[None, :]
        gl = gamma * lam

        w_next = tl.zeros([BLOCK_B], tl.float32)  # value of the first valid token after the block
        a_next = tl.zeros([BLOCK_B], tl.float32)  # advantage at that token
        n = tl.zeros([BLOCK_B], tl.float32)       # running count, mean and M2 for whitening
        mean = tl.zeros([BLOCK_B], tl.float32)
        m2 = tl.zeros([BLOCK_B], tl.float32)
        for k in range(NUM_CHUNKS):
            t = (NUM_CHUNKS - 1 - k) * BLOCK_T + cols
            ok = row_ok & (t < T)
            ok1 = row_ok & (t + 1 < T)
            valid = ok
            valid1 = ok1  # is t + 1 valid
            if HAS_MASK:
                valid = ok & (tl.load(M + rows64 * stride_m + t, mask=ok, other=0) != 0)
                valid1 = ok1 & (tl.load(M + rows64 * stride_m + t + 1, mask=ok1, other=0) != 0)
            # masked-off loads give 0, so garbage (even NaN) under the mask never enters the math
            r = tl.load(R + rows64 * stride_r + t, mask=valid, other=0.0).to(tl.float32)
            v = tl.load(V + rows64 * stride_v + t, mask=valid, other=0.0).to(tl.float32)
            v1 = tl.load(V + rows64 * stride_v + t + 1, mask=valid1, other=0.0).to(tl.float32)

            # w_t: value of the first valid token after t = v_{t+1} if t+1 is valid else w_{t+1}
            cw, dw = tl.associative_scan((tl.where(valid1, 0.0, 1.0), v1), 1, _compose,
                                         reverse=True)
            w = cw * w_next[:, None] + dw
            delta = tl.where(valid, r + gamma * w - v, 0.0)
            ca, da = tl.associative_scan((tl.where(valid, gl, 1.0), delta), 1, _compose,
                                         reverse=True)
            a_run = ca * a_next[:, None] + da  # advantage at the first valid token at or after t
            adv = tl.where(valid, a_run, 0.0)
            out = rows64 * stride_o + t
            tl.store(ADV + out, adv, mask=ok)
            tl.store(RET + out, tl.where(valid, adv + v, 0.0), mask=ok)
            # column 0 of the scans covers the whole block: the carries for the block before it
            w_next = tl.sum(tl.where(cols == 0, w, 0.0), 1)
            a_next = tl.sum(tl.where(cols == 0, a_run, 0.0), 1)

            if WHITEN:  # merge this block's (count, mean, M2) into the row's (Chan et al.)
                nc = tl.sum(valid.to(tl.float32), 1)
                mc = tl.sum(adv, 1) / tl.maximum(nc, 1.0)
                m2c = tl.sum(tl.where(valid, (adv - mc[:, None]) * (adv - mc[:, None]), 0.0), 1)
                tot = tl.maximum(n + nc, 1.0)
                d = mc - mean
                mean = mean + d * nc / tot
                m2 = m2 + m2c + d * d * n * nc / tot
                n = n + nc

        if WHITEN:
            keep = rows < B
            tl.store(STATS + rows, n, mask=keep)
            tl.store(STATS + B + rows, mean, mask=keep)
            tl.store(STATS + 2 * B + rows, m2, mask=keep)

    @triton.jit
    def _whiten_kernel(
        ADV, M, STATS, B, T, stride_m, stride_o, eps,
        HAS_MASK: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_T: tl.constexpr,
        NUM_CHUNKS, BLOCK_S: tl.constexpr,
    ):
        # Batch mean and unbiased variance from the rows' (count, mean, M2); every program
        # recomputes them (3 * B floats), which is cheaper than another launch.
        n_tot = tl.zeros([BLOCK_S], tl.float32)
        s = tl.zeros([BLOCK_S], tl.float32)
        for b0 in range(0, B, BLOCK_S):
            i = b0 + tl.arange(0, BLOCK_S)
            nb = tl.load(STATS + i, mask=i < B, other=0.0)
            n_tot += nb
            s += nb * tl.load(STATS + B + i, mask=i < B, other=0.0)
        count = tl.sum(n_tot, 0)
        mean = tl.sum(s, 0) / tl.maximum(count, 1.0)
        acc = tl.zeros([BLOCK_S], tl.float32)
        for b0 in range(0, B, BLOCK_S):
            i = b0 + tl.arange(0, BLOCK_S)
            nb = tl.load(STATS + i, mask=i < B, other=0.0)
            d = tl.load(STATS + B + i, mask=i < B, other=0.0) - mean
            acc += tl.load(STATS + 2 * B + i, mask=i < B, other=0.0) + nb * d * d
        var = tl.where(count > 1.0, tl.sum(acc, 0) / tl.maximum(count - 1.0, 1.0), 0.0)
        rstd = 1.0 / tl.sqrt(var + eps)

        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows[:, None] < B
        rows64 = rows.to(tl.int64)[:, None]
        cols = tl.arange(0, BLOCK_T)[None, :]
        for k in range(NUM_CHUNKS):
            t = k * BLOCK_T + cols
            ok = row_ok & (t < T)
            valid = ok
            if HAS_MASK:
                valid = ok & (tl.load(M + rows64 * stride_m + t, mask=ok, other=0) != 0)
            a = tl.load(ADV + rows64 * stride_o + t, mask=valid, other=0.0)
            tl.store(ADV + rows64 * stride_o + t, tl.where(valid, (a - mean) * rstd, 0.0), mask=ok)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
def _gae_triton(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                gamma: float, lam: float, whiten: bool, block: tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the scan (and the whitening pass); ``block`` = (BLOCK_B, BLOCK_T) overrides the
    launch shape."""
    b, t = rewards.shape
    rewards, values = rows_arg(rewards), rows_arg(values)
    m = mask_arg(mask, rewards)
    adv = torch.empty(b, t, dtype=torch.float32, device=rewards.device)
    ret = torch.empty_like(adv)
    stats = torch.empty(3 * b if whiten else 1, dtype=torch.float32, device=rewards.device)
    block_b, block_t, chunks, warps = row_blocks(b, t, rewards.device, block)
    grid = (triton.cdiv(b, block_b),)
    _gae_kernel[grid](
        rewards, values, m, adv, ret, stats,
        b, t, rewards.stride(0), values.stride(0), m.stride(0), adv.stride(0),
        float(gamma), float(lam),
        HAS_MASK=mask is not None, WHITEN=whiten,
        BLOCK_B=block_b, BLOCK_T=block_t, NUM_CHUNKS=chunks, num_warps=warps,
    )
    if whiten:
        _whiten_kernel[grid](
            adv, m, stats, b, t, m.stride(0), adv.stride(0), WHITEN_EPS,
            HAS_MASK=mask is not None, BLOCK_B=block_b, BLOCK_T=block_t, NUM_CHUNKS=chunks,
            BLOCK_S=min(next_pow2(b), 1024), num_warps=warps,
        )
    return adv, ret


# --------------------------------------------------------------------------------------------------
# Registered op (opaque to torch.compile)
# --------------------------------------------------------------------------------------------------
# torch.compile sees the kernel launch as one opaque op with a shape-only fake.
@custom_op("rlkd_fast::gae", mutates_args=())
def _gae_op(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
            gamma: float, lam: float, whiten: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _gae_triton(rewards, values, mask, gamma, lam, whiten)


@_gae_op.register_fake
def _(rewards, values, mask, gamma, lam, whiten):
    adv = rewards.new_empty(rewards.shape, dtype=torch.float32)
    return adv, torch.empty_like(adv)


# --------------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------------
def masked_whiten(x: torch.Tensor, mask: torch.Tensor | None, eps: float = WHITEN_EPS
                  ) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the valid entries of ``x`` (any shape), 0 elsewhere.

    The variance is the unbiased one (divides by count - 1, as TRL's and ReFT's ``masked_whiten``);
    with fewer than two valid entries it is taken as 0, so the result is 0, never NaN.
    """
    valid = torch.ones_like(x, dtype=torch.bool) if mask is None else mask != 0
    x = torch.where(valid, x, 0)
    count = valid.sum()
    mean = x.sum() / count.clamp(min=1)
    centred = torch.where(valid, x - mean, 0)
    var = (centred * centred).sum() / (count - 1).clamp(min=1)
    var = torch.where(count > 1, var, 0)
    return centred * torch.rsqrt(var + eps)


def gae_reference(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
                  gamma: float = 1.0, lam: float = 0.95, whiten: bool = False,
                  chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE in plain PyTorch, vectorised over B and over blocks of ``chunk`` steps.

    Same contract as :func:`gae`, but computes and returns float64 for float64 inputs (float32
    otherwise), so tests can hold the kernel to a float64 answer. Within
    a block, A_t = sum_{s >= t} (gamma*lam)^(K_t - K_s) d_s + (gamma*lam)^(K_t - K_end) A_next,
    where K counts the valid tokens from t to the end (exponents are never negative, so no
    overflow and gamma*lam = 0 is exact); the loop runs over T / chunk blocks, not over T.
    """
    dt = torch.float64 if torch.float64 in (rewards.dtype, values.dtype) else torch.float32
    b, t = rewards.shape
    valid = torch.ones(b, t, dtype=torch.bool, device=rewards.device) if mask is None \
        else mask != 0
    r = torch.where(valid, rewards.detach().to(dt), 0)
    v = torch.where(valid, values.detach().to(dt), 0)

    # value of the first valid token after t: gather at the next valid index (t if none)
    pos = torch.arange(t, device=r.device).expand(b, t)
    idx = torch.where(valid, pos, t)
    nxt = idx.flip(1).cummin(1).values.flip(1)  # first valid index >= t
    nxt = torch.cat([nxt[:, 1:], torch.full_like(nxt[:, :1], t)], 1)  # first valid index > t
    w = torch.cat([v, torch.zeros_like(v[:, :1])], 1).gather(1, nxt)
    delta = torch.where(valid, r + gamma * w - v, 0)

    gl = torch.tensor(gamma * lam, dtype=dt, device=r.device)
    adv = torch.empty_like(delta)
    carry = torch.zeros_like(delta[:, 0])
    for end in range(t, 0, -chunk):
        sl = slice(max(0, end - chunk), end)
        d, m = delta[:, sl], valid[:, sl].to(dt)
        k = m.flip(1).cumsum(1).flip(1)                      # valid tokens in [t, block end)
        expo = k[:, :, None] - k[:, None, :]                 # K_t - K_s
        upper = torch.ones_like(expo[0], dtype=torch.bool).triu()  # s >= t
        decay = torch.where(upper, gl ** expo.clamp(min=0), 0)
        a = (decay * d[:, None, :]).sum(-1) + gl ** k * carry[:, None]
        adv[:, sl] = a
        carry = a[:, 0]
    adv = torch.where(valid, adv, 0)
    ret = torch.where(valid, adv + v, 0)
    if whiten:
        adv = masked_whiten(adv, valid)
    return adv, ret


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
        gamma: float = 1.0, lam: float = 0.95, whiten: bool = False, backend: str = "auto"
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked GAE advantages and returns, optionally with the advantages whitened.

    Args:
        rewards: [B, T] per-token rewards, fp16/bf16/fp32/fp64.
        values: [B, T] value estimates V_t, same shape and device (any float dtype).
        mask: [B, T] bool/int/float, nonzero = valid token; None = all valid. Masked positions
            are skipped (the next valid value and advantage carry through them) and get 0.
        gamma, lam: discount and GAE lambda, each in [0, 1].
        whiten: also normalise the advantages over all valid tokens of the batch,
            ``(A - mean) / sqrt(var + 1e-8)`` with the unbiased variance; masked positions stay 0.
            Returns are computed from the raw advantages.
        backend: "auto" | "triton" | "torch" (see ``kernels._common.resolve_backend``).

    Returns:
        (advantages, returns), each [B, T] fp32. No gradient flows: the inputs are detached.
    """
    check_tensor("rewards", rewards, ndim=2)
    check_tensor("values", values, ndim=2)
    if mask is not None:
        check_tensor("mask", mask, ndim=2, dtypes=MASK_DTYPES)
    check_same("rewards", rewards, values=values, mask=mask)
    check_nonempty("rewards", rewards)
    check_range("gamma", gamma, 0.0, 1.0)
    check_range("lam", lam, 0.0, 1.0)
    rewards, values = rewards.detach(), values.detach()
    mask = None if mask is None else mask.detach()
    if resolve_backend(backend, rewards) == "torch":
        adv, ret = gae_reference(rewards, values, mask, gamma, lam, whiten)
        return adv.float(), ret.float()
    # eager calls skip the custom-op dispatcher (its Python overhead rivals the kernels' time)
    launch = _gae_op if torch.compiler.is_compiling() else _gae_triton
    return launch(rewards, values, mask, float(gamma), float(lam), bool(whiten))
