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
