"""GRPO advantages: each sample's reward normalised within its group of ``group_size``
consecutive samples (the K completions of one prompt).

    A_i = (r_i - mean_g) / (std_g + eps)      (scale=True; std is the unbiased one, as TRL's)
    A_i = r_i - mean_g                        (scale=False, Dr. GRPO)

A group whose rewards are all equal (std 0, or a group of one) gets exactly 0, never NaN or a
rounding residue divided by eps. One program normalises a block of groups; no gradient.
"""

from __future__ import annotations

import torch

from ._common import (
    HAS_TRITON,
    check_nonempty,
    check_range,
    check_tensor,
    custom_op,
    next_pow2,
    resolve_backend,
)

if HAS_TRITON:
    import triton
    import triton.language as tl

__all__ = ["grpo_advantages", "grpo_advantages_reference"]


# --------------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------------
if HAS_TRITON:

    @triton.jit
    def _grpo_kernel(R, OUT, NUM_GROUPS, G, inv_g, inv_dof, eps, SCALE: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr):
        # inv_g = 1 / G and inv_dof = 1 / max(G - 1, 1) come from the host: G = 1 would be a
        # compile-time constant here, and the unbiased variance of one sample is taken as 0
        groups = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
        cols = tl.arange(0, BLOCK_G)[None, :]
        ok = (groups < NUM_GROUPS) & (cols < G)
        offs = groups.to(tl.int64) * G + cols
        r = tl.load(R + offs, mask=ok, other=0.0).to(tl.float32)
        mean = tl.sum(r, 1) * inv_g
        centred = tl.where(ok, r - mean[:, None], 0.0)
        flat = (tl.max(tl.where(ok, r, -float("inf")), 1)
                == tl.min(tl.where(ok, r, float("inf")), 1))[:, None]
        adv = centred
        if SCALE:
            var = tl.sum(centred * centred, 1) * inv_dof
            adv = centred / (tl.sqrt(var)[:, None] + eps)
        tl.store(OUT + offs, tl.where(flat, 0.0, adv), mask=ok)


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------
def _grpo_triton(rewards: torch.Tensor, group_size: int, eps: float, scale: bool,
                 block_n: int | None = None) -> torch.Tensor:
    """Launch the kernel; ``block_n`` (groups per program) overrides the heuristic."""
    n = rewards.numel()
    groups = n // group_size
    out = torch.empty(n, dtype=torch.float32, device=rewards.device)
    block_g = next_pow2(group_size)
    # a few thousand rewards per program; on CPU (interpreter) one program takes them all
    budget = 4096 if rewards.is_cuda else 1 << 16
    block_n = block_n or max(1, min(next_pow2(groups), budget // block_g))
    _grpo_kernel[(triton.cdiv(groups, block_n),)](
        rewards.contiguous(), out, groups, group_size, 1.0 / group_size,
        1.0 / max(group_size - 1, 1), eps, SCALE=scale,
        BLOCK_N=block_n, BLOCK_G=block_g, num_warps=4,
    )
    return out


# --------------------------------------------------------------------------------------------------
# Registered op (opaque to torch.compile)
# --------------------------------------------------------------------------------------------------
@custom_op("rlkd_fast::grpo_advantages", mutates_args=())
def _grpo_op(rewards: torch.Tensor, group_size: int, eps: float, scale: bool) -> torch.Tensor:
    return _grpo_triton(rewards, group_size, eps, scale)


@_grpo_op.register_fake
def _(rewards, group_size, eps, scale):
    return rewards.new_empty(rewards.shape, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# Torch backend
# --------------------------------------------------------------------------------------------------
def grpo_advantages_reference(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                              scale: bool = True) -> torch.Tensor:
    """:func:`grpo_advantages` in plain PyTorch; float64 in, float64 out (else float32)."""
    dt = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r = rewards.detach().to(dt).reshape(-1, group_size)
    centred = r - r.mean(1, keepdim=True)
    adv = centred
    if scale:
        var = (centred * centred).sum(1, keepdim=True) / max(group_size - 1, 1)
        adv = centred / (var.sqrt() + eps)
    flat = r.amax(1, keepdim=True) == r.amin(1, keepdim=True)
    return torch.where(flat, 0, adv).reshape(-1)


# --------------------------------------------------------------------------------------------------
# Public function
# --------------------------------------------------------------------------------------------------
def grpo_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6,
                    scale: bool = True, backend: str = "auto") -> torch.Tensor:
    """Group-normalised advantages.

    Args:
        rewards: [N] rewards (fp16/bf16/fp32/fp64), N a multiple of ``group_size``, the samples of
            one group consecutive (rows ``g*group_size .. (g+1)*group_size - 1``).
        group_size: samples per group (K), >= 1.
        eps: added to the std before dividing (>= 0).
        scale: divide by the group's std (GRPO); False only subtracts the mean (Dr. GRPO).
        backend: "auto" | "triton" | "torch".

    Returns:
        [N] fp32 advantages; groups with equal rewards get 0. No gradient (inputs detached).
    """
    check_tensor("rewards", rewards, ndim=1)
    check_nonempty("rewards", rewards)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if rewards.numel() % group_size:
        raise ValueError(f"rewards has {rewards.numel()} entries, not a multiple of "
                         f"group_size={group_size}")
    check_range("eps", eps, 0.0, float("inf"))
    rewards = rewards.detach()
    if resolve_backend(backend, rewards) == "torch":
        return grpo_advantages_reference(rewards, group_size, eps, scale).float()
    launch = _grpo_op if torch.compiler.is_compiling() else _grpo_triton  # eager: no dispatcher
    return launch(rewards, group_size, float(eps), bool(scale))
