import pytest
import torch

from rlkd_fast.kernels._common import as_mask, check_tensor, resolve_backend


def test_auto_backend_uses_interpreter_on_cpu():
    # conftest switches the interpreter on when there is no GPU
    assert resolve_backend("auto", torch.zeros(1)) == "triton"
    assert resolve_backend("torch", torch.zeros(1)) == "torch"


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", torch.zeros(1))


def test_check_tensor_messages():
    with pytest.raises(ValueError, match="must have 2 dims"):
        check_tensor("rewards", torch.zeros(3), ndim=2)
    with pytest.raises(TypeError, match="dtype"):
        check_tensor("rewards", torch.zeros(3, dtype=torch.int64), ndim=1)


def test_as_mask_accepts_bool_int_float():
    ref = torch.tensor([1.0, 0.0, 1.0])
    for m in (ref.bool(), ref.long(), ref):
        assert torch.equal(as_mask(m, ref), ref)


KERNEL_MODULES = ("gae", "grpo", "ppo_loss", "token_logprobs", "fused_ppo_loss", "yon_reward")


def test_a_second_copy_of_every_kernel_module_reuses_the_ops():
    """Executing the kernel files a second time (as transformers' probe for a hub package named
    "kernels" does when the repository root is on sys.path) must not redefine any custom op:
    a redefinition frees the first registration that the first copy still calls."""
    import importlib
    import sys
    import types
    from pathlib import Path

    from torch._library.custom_ops import OPDEFS

    first = {m: importlib.import_module(f"rlkd_fast.kernels.{m}") for m in KERNEL_MODULES}
    ops = {q: d._opoverload for q, d in OPDEFS.items() if q.startswith("rlkd_fast::")}
    assert len(ops) >= 10
    pkg = types.ModuleType("_kernels_again")  # a bare package: only the kernel files run again
    pkg.__path__ = [str(Path(first["gae"].__file__).parent)]
    sys.modules[pkg.__name__] = pkg
    try:
        again = {m: importlib.import_module(f"{pkg.__name__}.{m}") for m in KERNEL_MODULES}
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == pkg.__name__]:
            del sys.modules[name]
    assert all(again[m] is not first[m] for m in KERNEL_MODULES)  # really second copies
    after = {q: d._opoverload for q, d in OPDEFS.items() if q.startswith("rlkd_fast::")}
    assert after == ops  # same ops, same handles
    rewards, values = torch.randn(3, 7), torch.randn(3, 7)
    a = first["gae"].gae(rewards, values, gamma=0.9, lam=0.8)
    b = again["gae"].gae(rewards, values, gamma=0.9, lam=0.8)
    torch.testing.assert_close(a, b)


def test_the_ppo_losses_take_their_shared_arguments_in_one_order():
    """ppo_loss and fused_ppo_loss (and their torch and naive versions) list the arguments they
    share in the same order, so a call reads the same for both."""
    import inspect

    from rlkd_fast.kernels import (
        fused_ppo_loss,
        fused_ppo_loss_reference,
        naive,
        ppo_loss,
        ppo_loss_reference,
    )

    shared = ["old_logprobs", "advantages", "mask", "clip", "clip_high", "dual_clip",
              "reduction", "backend"]
    for fn in (ppo_loss, fused_ppo_loss, ppo_loss_reference, fused_ppo_loss_reference,
               naive.ppo_loss_naive, naive.fused_ppo_loss_naive):
        names = [n for n in inspect.signature(fn).parameters if n in shared]
        assert names == [n for n in shared if n in names], fn.__name__
        assert len(names) >= len(shared) - 1, fn.__name__  # only the references lack backend


def test_the_config_and_the_kernels_share_one_list_of_reductions():
    from rlkd_fast import config
    from rlkd_fast.kernels import _common

    assert config.REDUCTIONS is _common.REDUCTIONS
    x, valid = torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool)
    for reduction in config.REDUCTIONS:
        assert _common.reduce_tokens(x, valid, reduction) == 1
    with pytest.raises(ValueError, match="reduction must be one of"):
        _common.check_reduction("sum")
