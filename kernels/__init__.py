"""rlkd_fast.kernels: fused Triton kernels for the RL hot spots.

Depends on torch and triton only, so other RL codebases can take just these ops::

    from rlkd_fast.kernels import gae, ppo_loss, token_logprobs, fused_ppo_loss, yon_reward

Every op takes ``backend="auto" | "triton" | "torch"``: ``auto`` runs Triton on CUDA tensors (and
on CPU tensors under ``TRITON_INTERPRET=1``), the vectorised PyTorch version (``*_reference``)
otherwise.

One file per op, laid out in one order: the module docstring with the maths; the ``@triton.jit``
kernels; the launchers; the registered op (``torch.library``, so ``torch.compile`` traces
through it) and its autograd; the torch backend; the public function, whose docstring gives
every shape and dtype. Helpers shared by several ops live in ``_common`` (backend choice, input
checks, reductions, row-wise launch shapes) and ``_logits`` (the vocabulary-row helpers of
``token_logprobs`` and ``fused_ppo_loss``). ``naive`` holds the obvious version of each op, plain
loops in float64, which the tests hold both backends to.
"""

if __name__ == "kernels":
    # Imported under its bare directory name (the repository root is on sys.path, and
    # transformers probes for a hub package called "kernels"): stand in for the real package
    # instead of registering every custom op a second time, which would break the first copy.
    import importlib as _importlib
    import sys as _sys

    _sys.modules[__name__] = _importlib.import_module("rlkd_fast.kernels")
else:
    from .fused_ppo_loss import fused_ppo_loss, fused_ppo_loss_reference
    from .gae import gae, gae_reference, masked_whiten
    from .grpo import grpo_advantages, grpo_advantages_reference
    from .ppo_loss import ppo_loss, ppo_loss_reference
    from .token_logprobs import token_logprobs, token_logprobs_reference
    from .yon_reward import (
        yon_reward,
        yon_reward_from_hidden,
        yon_reward_from_hidden_reference,
        yon_reward_reference,
    )

__all__ = [
    "fused_ppo_loss",
    "fused_ppo_loss_reference",
    "gae",
    "gae_reference",
    "grpo_advantages",
    "grpo_advantages_reference",
    "masked_whiten",
    "ppo_loss",
    "ppo_loss_reference",
    "token_logprobs",
    "token_logprobs_reference",
    "yon_reward",
    "yon_reward_from_hidden",
    "yon_reward_from_hidden_reference",
    "yon_reward_reference",
]
