"""Token log-probs: ``log_softmax(logits / temperature)`` gathered at the sampled ids.

One pass over each vocabulary row (online max / sum-exp over chunks of V), so no fp32
``[B, T, V]`` tensor is ever materialised. The backward pass re-reads the logits once and writes
``g * (onehot - softmax) / temperature`` in the logits' dtype, optionally into the logits buffer
itself (``inplace_backward=True``) to save a ``[B, T, V]`` allocation.

The row helpers here (``_online_softmax``, ``_write_grad``, ...) are shared with
``fused_ppo_loss``. They work in base 2: with ``k = log2(e) / temperature`` the kernels keep
``m`` = running max of the raw logits, ``s = sum 2^(k (x - m))`` and
``t = sum 2^(k (x - m)) * k (x - m)``, so ``lse2 = k m + log2 s`` is the base-2 log-sum-exp of the
scaled logits and the entropy is ``ln2 * (log2 s - t / s)``.
"""

from __future__ import annotations

import math

import torch

from ._common import (
    HAS_TRITON,
    check_tensor,
    custom_op,
    interpreting,
    next_pow2,
    resolve_backend,
)

if HAS_TRITON:  # without triton only the torch path (the references) is available
    import triton
    import triton.language as tl

LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
ID_DTYPES = (torch.int32, torch.int64)
LOG2E = math.log2(math.e)
LN2 = math.log(2.0)
NEG_BIG = -1e30  # finite stand-in for -inf: keeps 0 * (-inf) = NaN out of the sums


# ----------------------------------------------------------------------------------------------
# Triton row helpers (a block of BLOCK_R rows, the vocabulary in chunks of BLOCK_V)
# ----------------------------------------------------------------------------------------------
if HAS_TRITON:
    _NEG_BIG = tl.constexpr(NEG_BIG)
    _LN2 = tl.constexpr(LN2)

    @triton.jit
    def _row_offsets(rows, T, stride_b, stride_t):
        """int64 offset of row ``r = b * T + t`` in a [B, T, V] tensor with strides (sb, st, 1)."""
        r = rows.to(tl.int64)
        return (r // T) * stride_b + (r % T) * stride_t

    @triton.jit
    def _load_logits(ptrs, ok, EVICT: tl.constexpr):
        x = tl.load(ptrs, mask=ok, other=float("-inf"), eviction_policy=EVICT).to(tl.float32)
        # -inf logits (and masked tails) become a large finite value; NaNs stay NaN
        return tl.maximum(x, _NEG_BIG, propagate_nan=tl.PropagateNan.ALL)

    @triton.jit
    def _online_softmax(logits_ptr, src, row_ok, V, k,
                        BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, SUB: tl.constexpr):
        """Pass 1: per row, the max ``m`` of the raw logits and the base-2 sums ``s``, ``t``.

        A chunk is read as [BLOCK_V // SUB, SUB] sub-rows with SUB = one warp's 128-bit loads,
        so its max and sums reduce inside a warp (no block barrier per chunk); each sub-row keeps
        its own running statistics, merged once at the end of the row.
        """
        SPLIT: tl.constexpr = BLOCK_V // SUB
        offs = tl.arange(0, SPLIT)[:, None] * SUB + tl.arange(0, SUB)[None, :]
        m = tl.full([BLOCK_R, SPLIT], _NEG_BIG, tl.float32)
        s = tl.zeros([BLOCK_R, SPLIT], tl.float32)
        t = tl.zeros([BLOCK_R, SPLIT], tl.float32)
        for v0 in range(0, V, BLOCK_V):
            c = v0 + offs
            ok = row_ok[:, None, None] & (c < V)[None, :, :]
            x = _load_logits(logits_ptr + src[:, None, None] + c[None, :, :], ok,
                             "evict_last")  # re-read soon by pass 2
            m_new = tl.maximum(m, tl.max(x, 2))
            shift = (m - m_new) * k
            alpha = tl.exp2(shift)
            d = x * k - (m_new * k)[:, :, None]
            e = tl.exp2(d)
            t = alpha * (t + shift * s) + tl.sum(e * d, 2)
            s = s * alpha + tl.sum(e, 2)
            m = m_new
        # merge the sub-rows; one that never saw a logit (m still at its start) holds garbage
        m_row = tl.max(m, 1)
        seen = m > _NEG_BIG
        shift = (m - m_row[:, None]) * k
        alpha = tl.where(seen, tl.exp2(shift), 0.0)
        t_row = tl.sum(tl.where(seen, alpha * (t + shift * s), 0.0), 1)
        s_row = tl.sum(alpha * s, 1)  # >= 1 once a finite logit was seen
        return m_row, tl.where(s_row > 0, s_row, 1.0), t_row

    @triton.jit
    def _gather_logit(logits_ptr, src, ids, row_ok, V):
        """The logit at each row's id (NaN for an id outside [0, V))."""
        ok = row_ok & (ids >= 0) & (ids < V)
        return tl.load(logits_ptr + src + ids, mask=ok, other=float("nan")).to(tl.float32)

    @triton.jit
    def _write_grad(logits_ptr, grad_ptr, src, dst, ids, x_id, row_ok, V, k, lse2, a, c0, bx,
                    HAS_BX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr):
        """Pass 2: ``grad = a * onehot(ids) - p * (c0 + bx * x)`` with ``p = softmax(x / T)``
        (``bx`` only when HAS_BX); ``x_id`` is the logit at the id, read before any write.

        The loop writes ``-p * (...)`` everywhere, then the id's element is rewritten after a
        barrier: no per-element compare with the id. Chunks run last to first: those read last
        in pass 1 are the likeliest still in L2.
        """
        cols = tl.arange(0, BLOCK_V)
        n_chunks = tl.cdiv(V, BLOCK_V)
        for i in range(n_chunks):
            c = (n_chunks - 1 - i) * BLOCK_V + cols
            ok = row_ok[:, None] & (c < V)[None, :]
            if HAS_BX:  # x * bx needs finite x: -inf logits become a large finite value
                x = _load_logits(logits_ptr + src[:, None] + c[None, :], ok, "evict_first")
                p = tl.exp2(x * k - lse2[:, None])
                g = -p * (c0[:, None] + bx[:, None] * x)
            else:  # -inf logits give p = 0 and a 0 gradient as they are
                x = tl.load(logits_ptr + src[:, None] + c[None, :], mask=ok, other=float("-inf"),
                            eviction_policy="evict_first").to(tl.float32)
                g = tl.exp2(x * k - lse2[:, None]) * -c0[:, None]
            tl.store(grad_ptr + dst[:, None] + c[None, :], g.to(grad_ptr.dtype.element_ty),
                     mask=ok, eviction_policy="evict_first")
        tl.debug_barrier()  # the loop's store of the id's element is visible before the rewrite
        p_id = tl.exp2(x_id * k - lse2)
        g_id = a - p_id * (c0 + bx * x_id) if HAS_BX else a - p_id * c0
        id_ok = row_ok & (ids >= 0) & (ids < V)
        tl.store(grad_ptr + dst + ids, g_id.to(grad_ptr.dtype.element_ty), mask=id_ok)

    @triton.jit
    def _write_zeros(grad_ptr, dst, row_ok, V, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr):
        """Rows whose gradient is known to be 0: write zeros without reading the logits."""
        cols = tl.arange(0, BLOCK_V)
        zero = tl.zeros([BLOCK_R, BLOCK_V], grad_ptr.dtype.element_ty)
        for v0 in range(0, V, BLOCK_V):
            c = v0 + cols
            ok = row_ok[:, None] & (c < V)[None, :]
            tl.store(grad_ptr + dst[:, None] + c[None, :], zero, mask=ok)

    @triton.jit
    def _token_logprobs_fwd_kernel(
        logits_ptr, ids_ptr, logp_ptr, lse2_ptr,  # [B,T,V] any float, [N] int, [N] f32, [N] f32
        N, T, V, stride_b, stride_t, k,
        SUB: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < N
        src = _row_offsets(rows, T, stride_b, stride_t)
        ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        m, s, _ = _online_softmax(logits_ptr, src, row_ok, V, k, BLOCK_R, BLOCK_V, SUB)
        lse2 = m * k + tl.log2(s)
        x_id = _gather_logit(logits_ptr, src, ids, row_ok, V)
        tl.store(logp_ptr + rows, (x_id * k - lse2) * _LN2, mask=row_ok)
        tl.store(lse2_ptr + rows, lse2, mask=row_ok)

    @triton.jit
    def _token_logprobs_bwd_kernel(
        logits_ptr, grad_ptr, ids_ptr, lse2_ptr, dlogp_ptr,
        N, T, V, stride_b, stride_t, gstride_b, gstride_t, k, inv_temp,
        BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < N
        dst = _row_offsets(rows, T, gstride_b, gstride_t)
        g = tl.load(dlogp_ptr + rows, mask=row_ok, other=0.0)
        if tl.max((g != 0).to(tl.int32), 0) == 0:  # masked-out tokens: no need to read the row
            _write_zeros(grad_ptr, dst, row_ok, V, BLOCK_R, BLOCK_V)
        else:
            src = _row_offsets(rows, T, stride_b, stride_t)
            ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
            x_id = _gather_logit(logits_ptr, src, ids, row_ok, V)
            lse2 = tl.load(lse2_ptr + rows, mask=row_ok, other=0.0)
            a = g * inv_temp
            _write_grad(logits_ptr, grad_ptr, src, dst, ids, x_id, row_ok, V, k, lse2, a, a, a,
                        False, BLOCK_R, BLOCK_V)

    @triton.jit
    def _scale_kernel(x_ptr, g_ptr, n, BLOCK: tl.constexpr):
        """``x *= g`` for a scalar ``g`` read on the device; a no-op when ``g == 1`` (no sync).

        A fixed, small grid striding over the tiles: when g == 1 only those few programs start.
        """
        g = tl.load(g_ptr).to(tl.float32)
        if g != 1.0:
            n_prog = tl.num_programs(0)
            for i in range(tl.program_id(0), tl.cdiv(n, BLOCK), n_prog):
                offs = tl.full([BLOCK], i, tl.int64) * BLOCK + tl.arange(0, BLOCK)
                ok = offs < n
                x = tl.load(x_ptr + offs, mask=ok).to(tl.float32)
                tl.store(x_ptr + offs, (x * g).to(x_ptr.dtype.element_ty), mask=ok)

    def _gpu_configs() -> list:
        """One row per program, the vocab in chunks. Pass 2 of the fused loss re-reads a row
        from L2 only if the rows in flight fit there (~50 MB): 32 warps at <= 64 registers
        hold one program per SM (132 rows: 13 MB at V=50000, 40 MB at V=151936); fewer warps
        run more rows at once, which wins if the L2 keeps up. Autotuning picks on the device."""
        return [triton.Config({"BLOCK_R": 1, "BLOCK_V": bv}, num_warps=nw, num_stages=ns)
                for bv, nw, ns in ((2048, 4, 3), (4096, 8, 2), (8192, 16, 2), (16384, 16, 1),
                                   (16384, 32, 2), (32768, 32, 1))]

    def _prune(configs, named_args, **_):
        cap = max(2048, next_pow2(named_args["V"]))
        return [c for c in configs if c.kwargs["BLOCK_V"] <= cap]

    def tuned(kernel, restore: list[str] | None = None):
        """``kernel`` autotuned over the GPU configs, keyed on V (and, implicitly, dtypes)."""
        return triton.autotune(_gpu_configs(), key=["V"], restore_value=restore,
                               prune_configs_by={"early_config_prune": _prune})(kernel)

    _fwd_tuned = tuned(_token_logprobs_fwd_kernel)
    _bwd_tuned = tuned(_token_logprobs_bwd_kernel)
    _bwd_tuned_inplace = tuned(_token_logprobs_bwd_kernel, restore=["grad_ptr"])


def warp_width(logits: torch.Tensor) -> int:
    """Elements one warp covers with 128-bit loads: the sub-row width of pass 1 (SUB)."""
    return 32 * 16 // logits.element_size()


def launch_rows(kernel, tuned_kernel, n_rows: int, V: int, *args, **meta) -> None:
    """Launch a row kernel: autotuned on a GPU, one small 2-D block config in the interpreter
    (few programs, since each costs ~1 ms there)."""
    if interpreting():
        # ~16 chunks per row: per-op overhead dominates there, the tile size hardly matters
        block_r, block_v = min(16, next_pow2(n_rows)), max(256, next_pow2(V) // 16)
        if "SUB" in meta:  # 4 sub-rows per chunk, so the sub-row merge runs in the tests too
            meta["SUB"] = block_v // 4
        kernel[(triton.cdiv(n_rows, block_r),)](*args, **meta, BLOCK_R=block_r, BLOCK_V=block_v)
    else:
        tuned_kernel[lambda cfg: (triton.cdiv(n_rows, cfg["BLOCK_R"]),)](*args, **meta)


@custom_op("rlkd_fast::scale_", mutates_args=("x",))
def scale_(x: torch.Tensor, g: torch.Tensor) -> None:
    """``x *= g`` in place for contiguous ``x`` and a 0-d ``g`` on x's device; skipped on the
    device when g == 1. A registered mutating op, so compiled backward graphs keep it in place."""
    block, max_programs = (1 << 16, 4) if interpreting() else (8192, 1024)
    grid = (max(1, min(triton.cdiv(x.numel(), block), max_programs)),)
    _scale_kernel[grid](x, g.reshape(1), x.numel(), BLOCK=block, num_warps=8)


@scale_.register_fake
def _(x, g):
    return None


# ----------------------------------------------------------------------------------------------
# Input checks shared with fused_ppo_loss
# ----------------------------------------------------------------------------------------------
def check_logits_ids(logits: torch.Tensor, ids: torch.Tensor, ndims: tuple[int, ...]) -> None:
    """``logits`` [..., V] float, ``ids`` [...] int32/int64, same leading shape and device."""
    check_tensor("logits", logits, ndim=ndims, dtypes=(*LOGIT_DTYPES, torch.float64))
    check_tensor("ids", ids, ndim=logits.dim() - 1, dtypes=ID_DTYPES)
    if tuple(ids.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"ids has shape {tuple(ids.shape)}, expected {tuple(logits.shape[:-1])} "
                         f"(logits' shape without the vocab dim; logits are {tuple(logits.shape)})")
    if ids.device != logits.device:
        raise ValueError(f"ids is on {ids.device}, logits on {logits.device}")
    if ids.numel() == 0:
        raise ValueError(f"empty batch: logits have shape {tuple(logits.shape)}")
    if logits.shape[-1] == 0:
        raise ValueError("logits have an empty vocabulary dim")


def check_temperature(temperature: float) -> None:
    if not (math.isfinite(float(temperature)) and float(temperature) > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def check_ids_in_vocab(ids: torch.Tensor, vocab: int, where: torch.Tensor | None = None) -> None:
    """Raise if an id (at a position where ``where`` != 0, when given) is outside [0, vocab).

    One device-to-host sync; callers can skip it with ``check_ids=False``.
    """
    bad = (ids < 0) | (ids >= vocab)
    if where is not None:
        bad &= where != 0
    if bool(bad.any()):
        first = ids[bad].flatten()[0].item()
        raise ValueError(f"token id {first} is outside the vocabulary [0, {vocab})")


def pick_backend(backend: str, logits: torch.Tensor) -> str:
    """``resolve_backend``; float64 logits go to the reference (the kernels compute in fp32)."""
    chosen = resolve_backend(backend, logits)
    if chosen == "triton" and logits.dtype == torch.float64:
        if backend == "triton":
            raise TypeError("backend='triton' takes fp32/fp16/bf16 logits, got float64")
        return "torch"
    return chosen


def rows_view(logits: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``logits`` [B,T,V] with a unit vocab stride, plus its (T, stride_b, stride_t).

    Sliced views such as ``logits[:, :-1]`` are read in place; only a strided vocab dim is copied.
    """
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    return logits, logits.shape[1], logits.stride(0), logits.stride(1)


# ----------------------------------------------------------------------------------------------
# Registered ops (opaque to torch.compile) and their autograd
# ----------------------------------------------------------------------------------------------
@custom_op("rlkd_fast::token_logprobs", mutates_args=())
def _token_logprobs_op(
    logits: torch.Tensor, ids: torch.Tensor, temperature: float, inplace_backward: bool,
    check_ids: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,T,V], ids [B,T] -> (logp [B,T] f32, base-2 logsumexp [B,T] f32)."""
    x, T, sb, st = rows_view(logits)
    B, V = x.shape[0], x.shape[2]
    logp = torch.empty((B, T), dtype=torch.float32, device=x.device)
    lse2 = torch.empty_like(logp)
    launch_rows(_token_logprobs_fwd_kernel, _fwd_tuned, B * T, V,
                x, ids.contiguous(), logp, lse2, B * T, T, V, sb, st, LOG2E / temperature,
                SUB=warp_width(x))
    if check_ids:  # after the launch (the kernel never reads out of bounds): the sync overlaps it
        check_ids_in_vocab(ids, V)
    return logp, lse2


@_token_logprobs_op.register_fake
def _(logits, ids, temperature, inplace_backward, check_ids):
    out = logits.new_empty(logits.shape[:-1], dtype=torch.float32)
    return out, torch.empty_like(out)


@custom_op("rlkd_fast::token_logprobs_bwd", mutates_args=())
def _token_logprobs_bwd_op(logits: torch.Tensor, ids: torch.Tensor, lse2: torch.Tensor,
                           grad_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """-> grad_logits [B,T,V] in logits' dtype (a new contiguous tensor)."""
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    _launch_bwd(logits, grad, ids, lse2, grad_logp, temperature, inplace=False)
    return grad


@_token_logprobs_bwd_op.register_fake
def _(logits, ids, lse2, grad_logp, temperature):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


@custom_op("rlkd_fast::token_logprobs_bwd_", mutates_args=("logits",))
def _token_logprobs_bwd_inplace_op(logits: torch.Tensor, ids: torch.Tensor, lse2: torch.Tensor,
                                   grad_logp: torch.Tensor, temperature: float) -> None:
    """Overwrites ``logits`` [B,T,V] (unit vocab stride) with their gradient."""
    _launch_bwd(logits, logits, ids, lse2, grad_logp, temperature, inplace=True)


def _launch_bwd(logits, grad, ids, lse2, grad_logp, temperature, inplace):
    x, T, sb, st = rows_view(logits)
    if inplace and x.data_ptr() != logits.data_ptr():
        raise ValueError("inplace_backward needs logits with a unit stride on the vocab dim")
    B, V = x.shape[0], x.shape[2]
    kernel = _bwd_tuned_inplace if inplace else _bwd_tuned
    launch_rows(_token_logprobs_bwd_kernel, kernel, B * T, V,
                x, grad, ids.contiguous(), lse2, grad_logp.float().contiguous(),
                B * T, T, V, sb, st, grad.stride(0), grad.stride(1),
                LOG2E / temperature, 1.0 / temperature)


def _setup_context(ctx, inputs, output):
    logits, ids, temperature, inplace, _ = inputs
    ctx.save_for_backward(logits, ids, output[1])
    ctx.temperature, ctx.inplace = temperature, inplace


def _backward(ctx, grad_logp, _grad_lse):
    logits, ids, lse2 = ctx.saved_tensors
    if ctx.inplace:
        torch.ops.rlkd_fast.token_logprobs_bwd_(logits, ids, lse2, grad_logp, ctx.temperature)
        return logits, None, None, None, None
    grad = torch.ops.rlkd_fast.token_logprobs_bwd(logits, ids, lse2, grad_logp, ctx.temperature)
    return grad, None, None, None, None


_token_logprobs_op.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------
def token_logprobs(
    logits: torch.Tensor,
    ids: torch.Tensor,
    temperature: float = 1.0,
    inplace_backward: bool = False,
    check_ids: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Log-probabilities of the given tokens under ``softmax(logits / temperature)``.

    Args:
        logits: [B, T, V] or [N, V], fp32/fp16/bf16 (fp64 runs the reference). Any strides with
            a unit vocab stride are read in place, e.g. ``logits[:, :-1]``.
        ids: [B, T] or [N], int32/int64, each in [0, V).
        temperature: > 0; the logits are divided by it.
        inplace_backward: write the logits' gradient into the logits buffer itself (saves a
            [B, T, V] allocation; the logits' values are destroyed by the backward pass, so they
            must not be needed by anything else). Triton path only.
        check_ids: verify that all ids are in the vocabulary (one device-to-host sync).
        backend: "auto" | "triton" | "torch".

    Returns:
        [B, T] or [N] float32 log-probs, differentiable with respect to ``logits``; the gradient
        ``g * (onehot(ids) - softmax(logits / T)) / T`` is produced in the logits' dtype.
    """
    check_logits_ids(logits, ids, ndims=(2, 3))
    check_temperature(temperature)
    if pick_backend(backend, logits) == "torch":
        if check_ids:
            check_ids_in_vocab(ids, logits.shape[-1])
        return token_logprobs_reference(logits, ids, temperature)
    flat = logits.dim() == 2
    x, i = (logits.unsqueeze(0), ids.unsqueeze(0)) if flat else (logits, ids)
    logp, _ = _token_logprobs_op(x, i, float(temperature), bool(inplace_backward),
                                 bool(check_ids))
    return logp[0] if flat else logp


def token_logprobs_reference(logits: torch.Tensor, ids: torch.Tensor,
                             temperature: float = 1.0) -> torch.Tensor:
    """Plain PyTorch: ``log_softmax(logits / T)`` in fp32 (fp64 for fp64 logits), gathered at ids.
    Materialises the full [..., V] log-softmax."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    logp = torch.log_softmax(x, dim=-1).gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)
    return logp.float() if logits.dtype != torch.float64 else logp
