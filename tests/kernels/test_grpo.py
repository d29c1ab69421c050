"""grpo_advantages: Triton (compiled on a GPU, interpreted on CPU) and torch paths against a
per-group float64 loop."""

import pytest
import torch

from rlkd_fast.kernels.grpo import _grpo_triton, grpo_advantages
from rlkd_fast.kernels.naive import grpo_advantages_naive as loop_grpo

pytestmark = pytest.mark.usefixtures("on_device", "poisoned_outputs")


def rewards_with_flat_groups(groups, group_size, dtype=torch.float32):
    r = torch.randn(groups, group_size)
    r[0] = 0.1          # all equal (std 0; 0.1 is not exact in binary)
    r[-1, :] = 1.0      # all equal
    if groups > 2:
        r[1] = (torch.rand(group_size) > 0.5).float()  # 0/1 rewards, as a verifier gives
    return r.reshape(-1).to(dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("scale", [True, False])
def test_matches_loop(backend, dtype, scale):
    r = rewards_with_flat_groups(7, 8, dtype)
    out = grpo_advantages(r, 8, scale=scale, backend=backend)
    assert out.dtype == torch.float32 and out.shape == r.shape
    torch.testing.assert_close(out.double(), loop_grpo(r, 8, scale=scale), rtol=1e-5, atol=1e-5)
    assert (out[:8] == 0).all() and (out[-8:] == 0).all()


@pytest.mark.parametrize("n, group_size", [(1, 1), (5, 1), (6, 3), (5, 5), (12, 6)])
def test_odd_sizes(n, group_size):
    r = torch.randn(n)
    for backend in ("triton", "torch"):
        out = grpo_advantages(r, group_size, backend=backend)
        torch.testing.assert_close(out.double(), loop_grpo(r, group_size), rtol=1e-5, atol=1e-5)
        if group_size == 1:
            assert (out == 0).all()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_flat_groups_are_exactly_zero(backend):
    """The fp32 mean of 7 x 0.7 or 3 x 0.9 is off by an ulp; that residue must not be divided
    by eps."""
    r = torch.cat([torch.full((7,), 0.7), torch.full((7,), 0.9)])
    for scale in (True, False):
        assert (grpo_advantages(r, 7, scale=scale, backend=backend) == 0).all()
    assert (grpo_advantages(torch.full((6,), 0.9), 3, backend=backend) == 0).all()


def test_several_programs_and_noncontiguous():
    r = torch.randn(20, 3)[:, 0]  # strided view: 20 values, stride 3
    assert not r.is_contiguous()
    torch.testing.assert_close(grpo_advantages(r, 4).double(), loop_grpo(r, 4), rtol=1e-5,
                               atol=1e-5)
    r = rewards_with_flat_groups(11, 3)
    for block_n in (1, 2, 4):  # the last program is partly out of range
        torch.testing.assert_close(_grpo_triton(r, 3, 1e-6, True, block_n=block_n).double(),
                                   loop_grpo(r, 3), rtol=1e-5, atol=1e-5)


def test_compile_fullgraph(recording_backend):
    r = rewards_with_flat_groups(4, 4)
    graphs = []
    compiled = torch.compile(lambda x: grpo_advantages(x, 4) * 2, fullgraph=True,
                             backend=recording_backend(graphs))
    torch.testing.assert_close(compiled(r), grpo_advantages(r, 4) * 2)
    assert len(graphs) == 1 and "rlkd_fast.grpo_advantages" in graphs[0]


def test_errors():
    with pytest.raises(ValueError, match="multiple"):
        grpo_advantages(torch.randn(7), 2)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.randn(4), 0)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.randn(4), 2.0)
    with pytest.raises(ValueError, match="dims"):
        grpo_advantages(torch.randn(2, 4), 4)
    with pytest.raises(ValueError, match="empty"):
        grpo_advantages(torch.randn(0), 4)
    with pytest.raises(TypeError, match="dtype"):
        grpo_advantages(torch.ones(4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="eps"):
        grpo_advantages(torch.randn(4), 2, eps=-1.0)
