"""Shared by ``token_logprobs`` and ``fused_ppo_loss``: Triton helpers over rows of logits, their
launch, and the checks of a (logits, ids) pair.

A row is one position's vocabulary. The kernels work in base 2: with ``k = log2(e) / temperature``
they keep ``m`` = running max of the raw logits, ``s = sum 2^(k (x - m))`` and
``t = sum 2^(k (x - m)) * k (x - m)``, so ``lse2 = k m + log2 s`` is the base-2 log-sum-exp of the
scaled logits and the entropy is ``ln2 * (log2 s - t / s)``.
"""

from __future__ import annotations

import math

import torch

from ._common import HAS_TRITON, check_tensor, custom_op, interpreting, next_pow2, resolve_backend

if HAS_TRITON:  # without triton only the torch backends are available
    import triton
    import triton.language as tl

LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
ID_DTYPES = (torch.int32, torch.int64)
LOG2E = math.log2(math.e)
LN2 = math.log(2.0)
NEG_BIG = -1e30  # finite stand-in for -inf: keeps 0 * (-inf) = NaN out of the sums


# --------------------------------------------------------------------------------------------------
# Triton helpers (a block of BLOCK_R rows, the vocabulary in chunks of BLOCK_V)
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:
    _NEG_BIG = tl.constexpr(NEG_BIG)
    _LN2 = tl.constexpr(LN2)

    @triton.jit
    def row_offsets(rows, T, stride_b, stride_t):
        """int64 offset of row ``r = b * T + t`` in a [B, T, V] tensor with strides (sb, st, 1)."""
        r = rows.to(tl.int64)
        return (r // T) * stride_b + (r % T) * stride_t

    @triton.jit
    def load_logits(ptrs, ok, EVICT: tl.constexpr):
        x = tl.load(ptrs, mask=ok, other=float("-inf"), eviction_policy=EVICT).to(tl.float32)
        # -inf logits (and masked tails) become a large finite value; NaNs stay NaN
        return tl.maximum(x, _NEG_BIG, propagate_nan=tl.PropagateNan.ALL)

    @triton.jit
    def online_softmax(logits_ptr, src, row_ok, V, k,
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
            x = load_logits(logits_ptr + src[:, None, None] + c[None, :, :], ok,
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
    def gather_logit(logits_ptr, src, ids, row_ok, V):
        """The logit at each row's id (NaN for an id outside [0, V))."""
        ok = row_ok & (ids >= 0) & (ids < V)
        return tl.load(logits_ptr + src + ids, mask=ok, other=float("nan")).to(tl.float32)

    @triton.jit
    def write_grad(logits_ptr, grad_ptr, src, dst, ids, x_id, row_ok, V, k, lse2, a, c0, bx,
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
                x = load_logits(logits_ptr + src[:, None] + c[None, :], ok, "evict_first")
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
    def write_zeros(grad_ptr, dst, row_ok, V, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr):
        """Rows whose gradient is known to be 0: write zeros without reading the logits."""
        cols = tl.arange(0, BLOCK_V)
        zero = tl.zeros([BLOCK_R, BLOCK_V], grad_ptr.dtype.element_ty)
        for v0 in range(0, V, BLOCK_V):
            c = v0 + cols
            ok = row_ok[:, None] & (c < V)[None, :]
            tl.store(grad_ptr + dst[:, None] + c[None, :], zero, mask=ok)


    @triton.jit
    def scale_kernel(x_ptr, g_ptr, n, BLOCK: tl.constexpr):
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


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
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


def rows_view(logits: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """``logits`` [B,T,V] with a unit vocab stride, plus its (T, stride_b, stride_t).

    Sliced views such as ``logits[:, :-1]`` are read in place; only a strided vocab dim is copied.
    """
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    return logits, logits.shape[1], logits.stride(0), logits.stride(1)


@custom_op("rlkd_fast::scale_", mutates_args=("x",))
def scale_(x: torch.Tensor, g: torch.Tensor) -> None:
    """``x *= g`` in place for contiguous ``x`` and a 0-d ``g`` on x's device; skipped on the
    device when g == 1. A registered mutating op, so compiled backward graphs keep it in place."""
    block, max_programs = (1 << 16, 4) if interpreting() else (8192, 1024)
    grid = (max(1, min(triton.cdiv(x.numel(), block), max_programs)),)
    scale_kernel[grid](x, g.reshape(1), x.numel(), BLOCK=block, num_warps=8)


@scale_.register_fake
def _(x, g):
    return None


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------
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
