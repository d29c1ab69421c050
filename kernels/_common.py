"""Shared plumbing for the kernels: backend choice, input checks, Triton availability.

Every public op takes ``backend="auto" | "triton" | "torch"``. ``auto`` runs Triton on CUDA
tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` (the interpreter, used by the tests);
otherwise the plain-PyTorch reference beside each kernel.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import torch

from rlkd_fast.reductions import REDUCTIONS

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None
    HAS_TRITON = False

BACKENDS = ("auto", "triton", "torch")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Upper bound on a log-ratio before it is exponentiated (the PPO ratio, the k3 KL estimator):
# exp overflows fp32 above ~88.7, and the resulting inf turns into NaN as soon as it is
# multiplied by 0 (a zero advantage, a zero coefficient, an unselected branch's gradient).
# exp(20) ~ 4.9e8 keeps -A * ratio finite for any sane advantage. Beyond the bound the
# exponentiated value is constant (zero gradient), as with torch.clamp; verl bounds at +-20 too.
# Only the top is bounded: exp of a very negative log-ratio underflows to 0, which is harmless.
LOG_RATIO_MAX = 20.0


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, ref: torch.Tensor) -> str:
    """Map ``backend`` to ``"triton"`` or ``"torch"`` for tensors on ``ref``'s device."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    triton_ok = HAS_TRITON and (ref.is_cuda or (ref.device.type == "cpu" and interpreting()))
    if backend == "auto":
        return "triton" if triton_ok else "torch"
    if backend == "triton" and not triton_ok:
        why = "triton is not installed" if not HAS_TRITON else (
            f"tensors are on {ref.device}; Triton needs CUDA tensors, or TRITON_INTERPRET=1 "
            "set before import for CPU tensors"
        )
        raise RuntimeError(f"backend='triton' unavailable: {why}")
    return backend


def check_tensor(
    name: str,
    t: torch.Tensor,
    ndim: int | Sequence[int] | None = None,
    dtypes: Sequence[torch.dtype] | None = FLOAT_DTYPES,
) -> None:
    """Raise a clear error if ``t`` is not a tensor of the given rank and dtype."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dims, "
                             f"got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")


def check_same(ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in ``others`` (None skipped) has ``ref``'s shape and device."""
    for name, t in others.items():
        if t is None:
            continue
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} "
                             f"(the shape of {ref_name})")
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device}, {ref_name} on {ref.device}")


def check_nonempty(name: str, t: torch.Tensor) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): nothing to compute")


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= float(value) <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


def as_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """A mask in any of bool/int/float as a float32 tensor of 0/1 (all ones when None)."""
    if mask is None:
        return torch.ones(like.shape, dtype=torch.float32, device=like.device)
    if mask.dtype.is_complex:
        raise TypeError("mask must be bool, integer or floating, got complex")
    return (mask != 0).to(torch.float32)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_tokens(x: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """``x`` [B, T] reduced over its ``valid`` [B, T] bool entries as ``reduction`` says (see
    ``rlkd_fast.reductions``); entries outside ``valid`` (even inf or NaN) are never read."""
    x = torch.where(valid, x, 0)
    n = valid.sum(-1).to(x.dtype)
    if reduction == "token-mean":
        return x.sum() / n.sum().clamp(min=1)
    return (x.sum(-1) / n.clamp(min=1)).sum() / (n > 0).sum().clamp(min=1)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


MASK_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
               *FLOAT_DTYPES)


def custom_op(qualname: str, mutates_args: tuple[str, ...] = ()):
    """``torch.library.custom_op``, registering ``qualname`` once per process.

    These files can be executed twice: as ``rlkd_fast.kernels.*`` and, with the repository root
    on ``sys.path``, as ``kernels.*`` (transformers imports any top-level ``kernels`` package when
    probing for the hub package of that name). Redefining an op destroys its first registration,
    leaving the first copy's handles dangling (crashes), so a second copy reuses the op.
    """
    from torch._library.custom_ops import OPDEFS

    def define(fn):
        existing = OPDEFS.get(qualname)
        return existing or torch.library.custom_op(qualname, mutates_args=mutates_args)(fn)

    return define


# Launch configuration of the row-wise kernels (gae, ppo_loss): rows per program, columns per block.
@functools.lru_cache(maxsize=8)
def _num_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def row_blocks(b: int, t: int, device: torch.device, block: tuple[int, int] | None = None
               ) -> tuple[int, int, int, int]:
    """``(BLOCK_B, BLOCK_T, num_chunks, num_warps)`` for a [b, t] row-wise kernel.

    On a GPU a block holds a whole row up to 2048 tokens (longer rows loop over blocks), and rows
    are packed into a program only when there are more rows than SMs. Under the CPU interpreter,
    where every program costs about a millisecond, few large programs are best. ``block`` forces
    ``(BLOCK_B, BLOCK_T)`` (tests use it to cover several programs and blocks per row).
    """
    if block is not None:
        block_b, block_t = block
    elif device.type == "cuda":
        block_t = min(next_pow2(t), 2048)
        rows_per_sm = next_pow2(triton.cdiv(b, _num_sms(device.index or 0)))
        block_b = max(1, min(2048 // block_t, rows_per_sm))
    else:
        block_t = min(next_pow2(t), 256)
        block_b = max(1, min(next_pow2(b), 4096 // block_t))
    num_warps = min(8, max(1, block_b * block_t // 256))
    return block_b, block_t, triton.cdiv(t, block_t), num_warps


def mask_arg(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The mask as the kernels read it: any dtype, bool viewed as uint8 (no copy); ``like`` when
    there is no mask (a placeholder pointer the kernel never reads)."""
    if mask is None:
        return like
    mask = mask if mask.stride(-1) == 1 else mask.contiguous()
    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask


def rows_arg(x: torch.Tensor) -> torch.Tensor:
    """``x`` with unit stride along T (any row stride is fine for the kernels)."""
    return x if x.stride(-1) == 1 else x.contiguous()
