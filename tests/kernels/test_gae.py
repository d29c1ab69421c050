"""gae: Triton (compiled on a GPU, interpreted on CPU) and torch paths against the plain reverse
loop in float64 (``kernels.naive``)."""

import pytest
import torch
from helpers import assert_matches

from rlkd_fast.kernels.gae import _gae_triton, gae, gae_reference, masked_whiten
from rlkd_fast.kernels.naive import gae_naive

LOW = (torch.float16, torch.bfloat16)


pytestmark = pytest.mark.usefixtures("on_device", "poisoned_outputs")


def holey_mask(b, t):
    """Random holes, right padding, one all-masked row, one row with a single valid token."""
    mask = torch.rand(b, t) > 0.3
    mask[0, t // 2:] = False
    if b > 2:
        mask[1] = False
        mask[2] = False
        mask[2, t - 1] = True
    return mask


def inputs(b, t, dtype=torch.float32, poison=True):
    rewards = torch.randn(b, t).to(dtype)
    values = torch.randn(b, t).to(dtype)
    mask = holey_mask(b, t)
    if poison:  # masked entries must never be read
        rewards[~mask] = float("nan")
        values[~mask] = float("inf")
    return rewards, values, mask


def check(out, expected, mask, atol=2e-5):
    adv, ret = out
    for got, want in zip(out, expected, strict=True):
        assert_matches(got, want, rtol=2e-5, atol=atol)
    if mask is not None:  # every masked element exactly 0
        assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, *LOW])
def test_matches_loop(backend, dtype):
    rewards, values, mask = inputs(6, 37, dtype)
    expected = gae_naive(rewards.double(), values.double(), mask, 0.99, 0.9)
    check(gae(rewards, values, mask, gamma=0.99, lam=0.9, backend=backend), expected, mask)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 1), (2, 64)])
@pytest.mark.parametrize("with_mask", [True, False])
def test_odd_shapes(shape, with_mask):
    rewards, values = torch.randn(shape), torch.randn(shape)
    mask = (torch.rand(shape) > 0.3) if with_mask else None
    expected = gae_naive(rewards.double(), values.double(), mask, 1.0, 0.95)
    for backend in ("triton", "torch"):
        check(gae(rewards, values, mask, backend=backend), expected, mask)


@pytest.mark.parametrize("gamma, lam", [(0.0, 0.95), (1.0, 0.0), (1.0, 1.0), (0.5, 0.3)])
def test_gamma_lam_edges(gamma, lam):
    rewards, values, mask = inputs(3, 19)
    expected = gae_naive(rewards.double(), values.double(), mask, gamma, lam)
    check(gae(rewards, values, mask, gamma=gamma, lam=lam), expected, mask)
    check(gae_reference(rewards, values, mask, gamma, lam, chunk=4), expected, mask)


@pytest.mark.parametrize("block", [(1, 8), (2, 4), (4, 16)])
def test_several_blocks_and_programs(block):
    """Carries across blocks of a row (holes straddle block edges) and rows split over programs."""
    rewards, values, mask = inputs(5, 37)
    mask[3, 6:20] = False  # a masked span across two 8-wide blocks
    expected = gae_naive(rewards.double(), values.double(), mask, 0.97, 0.9)
    check(_gae_triton(rewards, values, mask, 0.97, 0.9, False, block=block), expected, mask)


def test_reference_matches_loop_across_chunks():
    rewards, values, mask = inputs(4, 50, torch.float64)
    expected = gae_naive(rewards, values, mask, 0.9, 0.8)
    for chunk in (1, 7, 64):
        adv, ret = gae_reference(rewards, values, mask, 0.9, 0.8, chunk=chunk)
        assert adv.dtype == torch.float64
        torch.testing.assert_close(adv, expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ret, expected[1], rtol=1e-12, atol=1e-12)


def test_strided_inputs():
    """Row-strided slices and a transposed (non unit stride) view give the same answer."""
    wide_r, wide_v = torch.randn(4, 40), torch.randn(4, 40)
    rewards, values = wide_r[:, 3:30], wide_v.t().contiguous().t()[:, 3:30]
    mask = torch.rand(27, 4).t() > 0.3
    expected = gae_naive(rewards.double(), values.double(), mask, 1.0, 0.95)
    check(gae(rewards, values, mask), expected, mask)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
def test_mask_dtypes(mask_dtype):
    rewards, values, mask = inputs(3, 11)
    expected = gae_naive(rewards.double(), values.double(), mask, 1.0, 0.95)
    check(gae(rewards, values, mask.to(mask_dtype)), expected, mask)


@pytest.mark.parametrize("block", [None, (2, 8)])
def test_whiten(block):
    rewards, values, mask = inputs(5, 29)
    expected, ret_expected = gae_naive(rewards.double(), values.double(), mask, 1.0, 0.95,
                                       whiten=True)
    adv, ret = _gae_triton(rewards, values, mask, 1.0, 0.95, True, block=block)
    check((adv, ret), (expected, ret_expected), mask, atol=1e-4)
    ref_adv, _ = gae(rewards, values, mask, whiten=True, backend="torch")
    torch.testing.assert_close(ref_adv.double(), expected, rtol=1e-4, atol=1e-4)


def test_whiten_degenerate():
    """No valid token, or a single one: all zeros, not NaN."""
    rewards, values = torch.randn(2, 6), torch.randn(2, 6)
    single = torch.zeros(2, 6, dtype=torch.bool)
    single[1, 2] = True
    for mask in (torch.zeros(2, 6, dtype=torch.bool), single):
        for backend in ("triton", "torch"):
            adv, ret = gae(rewards, values, mask, whiten=True, backend=backend)
            assert (adv == 0).all()
            assert torch.isfinite(ret).all() and (ret[~mask] == 0).all()
    assert (masked_whiten(torch.ones(3), None) == 0).all()


def test_no_gradient():
    values = torch.randn(2, 5, requires_grad=True)
    adv, ret = gae(torch.randn(2, 5), values)
    assert not adv.requires_grad and not ret.requires_grad


def test_compile_fullgraph(recording_backend):
    """torch.compile traces through the op (aot_eager: the inductor C++ build takes ~30 s on this
    CPU; the graph and the fake kernels it checks are the same)."""
    rewards, values, mask = inputs(3, 10, poison=False)

    def f(r, v, m):
        adv, ret = gae(r, v, m, gamma=0.9, whiten=True)
        return adv * 2, ret

    graphs = []
    compiled = torch.compile(f, fullgraph=True, backend=recording_backend(graphs))
    for out, expected in zip(compiled(rewards, values, mask), f(rewards, values, mask)):
        torch.testing.assert_close(out, expected)
    assert len(graphs) == 1 and "rlkd_fast.gae" in graphs[0]


def test_errors():
    r, v = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError, match="gamma"):
        gae(r, v, gamma=1.5)
    with pytest.raises(ValueError, match="lam"):
        gae(r, v, lam=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        gae(r, v, gamma=float("nan"))
    with pytest.raises(ValueError, match="shape"):
        gae(r, torch.randn(2, 6))
    with pytest.raises(ValueError, match="shape"):
        gae(r, v, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dims"):
        gae(r[0], v[0])
    with pytest.raises(TypeError, match="dtype"):
        gae(r.long(), v)
    with pytest.raises(ValueError, match="empty"):
        gae(torch.randn(0, 5), torch.randn(0, 5))
    with pytest.raises(ValueError, match="on meta"):
        gae(r, v.to("meta"))
    with pytest.raises(ValueError, match="backend"):
        gae(r, v, backend="cuda")
