"""Token log-probs: ``log_softmax(logits / temperature)`` gathered at the sampled ids.

For a row ``x`` (one position's logits over the vocabulary) and its sampled id ``i``::

    logp = x_i / T - logsumexp(x / T)
    d logp / d x = (onehot(i) - softmax(x / T)) / T

One pass over each vocabulary row (online max / sum-exp over chunks of V, see ``_logits``), so no
fp32 ``[B, T, V]`` tensor is ever materialised. The backward pass re-reads the logits once and
writes ``g * (onehot - softmax) / T`` in the logits' dtype, optionally into the logits buffer
itself (``inplace_backward=True``) to save a ``[B, T, V]`` allocation.
"""

from __future__ import annotations

import torch

from . import _logits
from ._common import HAS_TRITON, custom_op

if HAS_TRITON:  # without triton only the torch backend is available
    import triton
    import triton.language as tl

__all__ = ["token_logprobs", "token_logprobs_reference"]


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:
    _LN2 = tl.constexpr(_logits.LN2)

    @triton.jit
    def _token_logprobs_fwd_kernel(
        logits_ptr, ids_ptr, logp_ptr, lse2_ptr,  # [B,T,V] any float, [N] int, [N] f32, [N] f32
        N, T, V, stride_b, stride_t, k,
        SUB: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < N
        src = _logits.row_offsets(rows, T, stride_b, stride_t)
        ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
        m, s, _ = _logits.online_softmax(logits_ptr, src, row_ok, V, k, BLOCK_R, BLOCK_V, SUB)
        lse2 = m * k + tl.log2(s)
        x_id = _logits.gather_logit(logits_ptr, src, ids, row_ok, V)
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
        dst = _logits.row_offsets(rows, T, gstride_b, gstride_t)
        g = tl.load(dlogp_ptr + rows, mask=row_ok, other=0.0)
        if tl.max((g != 0).to(tl.int32), 0) == 0:  # masked-out tokens: no need to read the row
            _logits.write_zeros(grad_ptr, dst, row_ok, V, BLOCK_R, BLOCK_V)
        else:
            src = _logits.row_offsets(rows, T, stride_b, stride_t)
            ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
            x_id = _logits.gather_logit(logits_ptr, src, ids, row_ok, V)
            lse2 = tl.load(lse2_ptr + rows, mask=row_ok, other=0.0)
            a = g * inv_temp
            _logits.write_grad(logits_ptr, grad_ptr, src, dst, ids, x_id, row_ok, V, k, lse2,
                               a, a, a, False, BLOCK_R, BLOCK_V)

    _fwd_tuned = _logits.tuned(_token_logprobs_fwd_kernel)
    _bwd_tuned = _logits.tuned(_token_logprobs_bwd_kernel)
    _bwd_tuned_inplace = _logits.tuned(_token_logprobs_bwd_kernel, restore=["grad_ptr"])


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
def _token_logprobs_triton(logits: torch.Tensor, ids: torch.Tensor, temperature: float
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,T,V], ids [B,T] -> (logp [B,T] f32, base-2 logsumexp [B,T] f32)."""
    x, T, sb, st = _logits.rows_view(logits)
    B, V = x.shape[0], x.shape[2]
    logp = torch.empty((B, T), dtype=torch.float32, device=x.device)
    lse2 = torch.empty_like(logp)
    _logits.launch_rows(_token_logprobs_fwd_kernel, _fwd_tuned, B * T, V,
                        x, ids.contiguous(), logp, lse2, B * T, T, V, sb, st,
                        _logits.LOG2E / temperature, SUB=_logits.warp_width(x))
    return logp, lse2


def _launch_bwd(logits, grad, ids, lse2, grad_logp, temperature, inplace):
    """Write the logits' gradient into ``grad`` (``logits`` itself when ``inplace``)."""
    x, T, sb, st = _logits.rows_view(logits)
    if inplace and x.data_ptr() != logits.data_ptr():
        raise ValueError("inplace_backward needs logits with a unit stride on the vocab dim")
    B, V = x.shape[0], x.shape[2]
    kernel = _bwd_tuned_inplace if inplace else _bwd_tuned
    _logits.launch_rows(_token_logprobs_bwd_kernel, kernel, B * T, V,
                        x, grad, ids.contiguous(), lse2, grad_logp.float().contiguous(),
                        B * T, T, V, sb, st, grad.stride(0), grad.stride(1),
                        _logits.LOG2E / temperature, 1.0 / temperature)


# --------------------------------------------------------------------------------------------------
# Registered ops (opaque to torch.compile) and their autograd
# --------------------------------------------------------------------------------------------------
@custom_op("rlkd_fast::token_logprobs", mutates_args=())
def _token_logprobs_op(
    logits: torch.Tensor, ids: torch.Tensor, temperature: float, inplace_backward: bool,
    check_ids: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,T,V], ids [B,T] -> (logp [B,T] f32, base-2 logsumexp [B,T] f32)."""
    logp, lse2 = _token_logprobs_triton(logits, ids, temperature)
    if check_ids:  # after the launch (the kernel never reads out of bounds): the sync overlaps it
        _logits.check_ids_in_vocab(ids, logits.shape[-1])
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


# --------------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------------
def token_logprobs_reference(logits: torch.Tensor, ids: torch.Tensor,
                             temperature: float = 1.0) -> torch.Tensor:
    """Plain PyTorch: ``log_softmax(logits / T)`` in fp32 (fp64 for fp64 logits), gathered at ids.
    Materialises the full [..., V] log-softmax."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    logp = torch.log_softmax(x, dim=-1).gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)
    return logp.float() if logits.dtype != torch.float64 else logp


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------
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
    _logits.check_logits_ids(logits, ids, ndims=(2, 3))
    _logits.check_temperature(temperature)
    if _logits.pick_backend(backend, logits) == "torch":
        if check_ids:
            _logits.check_ids_in_vocab(ids, logits.shape[-1])
        return token_logprobs_reference(logits, ids, temperature)
    flat = logits.dim() == 2
    x, i = (logits.unsqueeze(0), ids.unsqueeze(0)) if flat else (logits, ids)
    logp, _ = _token_logprobs_op(x, i, float(temperature), bool(inplace_backward),
                                 bool(check_ids))
    return logp[0] if flat else logp
