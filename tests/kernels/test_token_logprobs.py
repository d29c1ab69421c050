"""token_logprobs: Triton (interpreter) and torch paths against the float64 row loop
(``kernels.naive``)."""

import pytest
import torch
from helpers import assert_matches

from rlkd_fast.kernels.naive import token_logprobs_naive
from rlkd_fast.kernels.token_logprobs import token_logprobs, token_logprobs_reference

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# element-wise relative tolerance of a gradient stored in the logits' dtype
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def make_logits(shape, dtype, scale=3.0):
    return (torch.randn(shape) * scale).to(dtype)


def reference_fwd_bwd(logits, ids, grad_out, temperature):
    x = logits.detach().double().requires_grad_()
    logp = token_logprobs_naive(x, ids, temperature)
    logp.backward(grad_out.double())
    return logp.detach(), x.grad


def check_grad(grad, ref, dtype):
    assert_matches(grad, ref, rtol=GRAD_RTOL[dtype], atol=1e-6, dtype=dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 7), (3, 5, 300), (2, 9, 1000)])
def test_matches_float64_reference(poisoned_outputs, backend, dtype, shape):
    V = shape[-1]
    logits = make_logits(shape, dtype).requires_grad_()
    ids = torch.randint(0, V, shape[:-1])
    ids.view(-1)[0] = V - 1  # the last vocab entry, in the tail chunk
    temperature = 0.7
    grad_out = torch.randn(shape[:-1])
    grad_out.view(-1)[1::3] = 0  # holes: rows with no gradient are written without being read
    logp = token_logprobs(logits, ids, temperature=temperature, backend=backend)
    logp.backward(grad_out)
    ref_logp, ref_grad = reference_fwd_bwd(logits, ids, grad_out, temperature)
    assert logp.dtype == torch.float32 and logp.shape == ids.shape
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-5, atol=2e-5)
    check_grad(logits.grad, ref_grad, dtype)


def test_two_dim_input_and_int32_ids(poisoned_outputs):
    logits = make_logits((11, 257), torch.float32).requires_grad_()
    ids = torch.randint(0, 257, (11,), dtype=torch.int32)
    grad_out = torch.randn(11)
    logp = token_logprobs(logits, ids)
    logp.backward(grad_out)
    ref_logp, ref_grad = reference_fwd_bwd(logits, ids, grad_out, 1.0)
    assert logp.shape == (11,)
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-5, atol=2e-5)
    check_grad(logits.grad, ref_grad, torch.float32)


def test_all_zero_upstream_gradient_gives_exact_zeros(poisoned_outputs):
    logits = make_logits((2, 3, 100), torch.bfloat16).requires_grad_()
    ids = torch.randint(0, 100, (2, 3))
    token_logprobs(logits, ids).backward(torch.zeros(2, 3))
    assert torch.equal(logits.grad, torch.zeros_like(logits.grad))


def test_sliced_view_is_read_in_place():
    # logits[:, :-1] (the usual shift) has a row stride of T*V: no copy, same numbers
    full = make_logits((3, 8, 301), torch.bfloat16).requires_grad_()
    ids = torch.randint(0, 301, (3, 7))
    grad_out = torch.randn(3, 7)
    token_logprobs(full[:, :-1], ids).backward(grad_out)
    _, ref_grad = reference_fwd_bwd(full[:, :-1], ids, grad_out, 1.0)
    check_grad(full.grad[:, :-1], ref_grad, torch.bfloat16)
    assert torch.equal(full.grad[:, -1], torch.zeros_like(full.grad[:, -1]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inplace_backward_overwrites_the_logits_buffer(dtype):
    base = make_logits((2, 5, 300), dtype)
    logits = base.clone().requires_grad_()
    ids = torch.randint(0, 300, (2, 5))
    grad_out = torch.randn(2, 5)
    grad_out[1, 2:] = 0
    h = logits * 1  # a non-leaf, as logits coming out of an lm_head would be
    h.retain_grad()
    token_logprobs(h, ids, inplace_backward=True).backward(grad_out)
    _, ref_grad = reference_fwd_bwd(base, ids, grad_out, 1.0)
    check_grad(h.grad, ref_grad, dtype)
    check_grad(logits.grad, ref_grad, dtype)
    assert torch.equal(h.detach(), logits.grad)  # the logits' own memory now holds the gradient
    assert torch.equal(h.grad[1, 2:], torch.zeros_like(h.grad[1, 2:]))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_inf_logits_and_extreme_values(backend, temperature):
    logits = make_logits((2, 3, 50), torch.float32, scale=30.0)
    logits[..., 45:] = float("-inf")  # a vocabulary padded to a round size
    logits[0, :, :10] = float("-inf")  # banned tokens
    logits[1, 2, ::3] = float("-inf")  # a row with its own -inf entries
    logits[1, 0] += 100.0  # exp(>88) overflows fp32: the running max must keep it in range
    banned = logits.isinf()
    logits.requires_grad_()
    ids = torch.randint(10, 45, (2, 3))
    ids[1, 2] = 11  # not a -inf entry of its row
    grad_out = torch.randn(2, 3)
    logp = token_logprobs(logits, ids, temperature=temperature, backend=backend)
    logp.backward(grad_out)
    # the reference on -1e4 instead of -inf: the same softmax, with finite logits
    ref_logp, ref_grad = reference_fwd_bwd(logits.detach().masked_fill(banned, -1e4), ids,
                                           grad_out, temperature)
    # fp32 rounding of logits ~ 200 limits the relative accuracy to ~1e-5
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits.grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(logits.grad[banned], torch.zeros_like(logits.grad[banned]))


def test_real_vocab_size():
    V = 151936
    logits = make_logits((1, 3, V), torch.bfloat16).requires_grad_()
    ids = torch.tensor([[0, V - 1, 77777]])
    grad_out = torch.randn(1, 3)
    logp = token_logprobs(logits, ids)
    logp.backward(grad_out)
    ref_logp, ref_grad = reference_fwd_bwd(logits, ids, grad_out, 1.0)
    torch.testing.assert_close(logp.double(), ref_logp, rtol=1e-5, atol=2e-5)
    check_grad(logits.grad, ref_grad, torch.bfloat16)


def test_float64_logits_run_the_reference():
    logits = make_logits((2, 3, 40), torch.float64)
    ids = torch.randint(0, 40, (2, 3))
    out = token_logprobs(logits, ids)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, token_logprobs_reference(logits, ids))
    with pytest.raises(TypeError, match="float64"):
        token_logprobs(logits, ids, backend="triton")


@pytest.mark.parametrize("inplace", [False, True])
def test_torch_compile_fullgraph(inplace):
    def f(weight, hidden, ids):
        logits = hidden @ weight  # a non-leaf, as from an lm_head
        return (token_logprobs(logits, ids, temperature=0.5, inplace_backward=inplace) ** 2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    weight = torch.randn(16, 70, requires_grad=True)
    hidden, ids = torch.randn(2, 3, 16), torch.randint(0, 70, (2, 3))
    out = compiled(weight, hidden, ids)
    out.backward()
    w64 = weight.detach().double().requires_grad_()
    ref = (token_logprobs_reference(hidden.double() @ w64, ids, 0.5) ** 2).sum()
    ref.backward()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_clear_errors(backend):
    logits = torch.randn(2, 3, 10)
    ids = torch.randint(0, 10, (2, 3))
    bad_ids = ids.clone()
    bad_ids[1, 2] = 10
    with pytest.raises(ValueError, match="outside the vocabulary"):
        token_logprobs(logits, bad_ids, backend=backend)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        token_logprobs(logits, -ids - 1, backend=backend)
    with pytest.raises(ValueError, match="ids has shape"):
        token_logprobs(logits, ids[:, :2], backend=backend)
    with pytest.raises(ValueError, match="ids must have 2 dims"):
        token_logprobs(logits, ids.view(-1, 1, 1), backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        token_logprobs(logits, ids.float(), backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        token_logprobs(logits.long(), ids, backend=backend)
    with pytest.raises(ValueError, match="empty batch"):
        token_logprobs(logits[:0], ids[:0], backend=backend)
    for t in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            token_logprobs(logits, ids, temperature=t, backend=backend)
    with pytest.raises(ValueError, match="backend"):
        token_logprobs(logits, ids, backend="cuda")


def test_scale_in_place_strides_over_tiles():
    from rlkd_fast.kernels._logits import scale_

    x = torch.randn(5 * 65536 + 3)  # more tiles than programs: each program loops
    y = x.clone()
    scale_(x, torch.tensor(1.0))
    assert torch.equal(x, y)
    scale_(x, torch.tensor(-2.5))
    assert torch.equal(x, y * -2.5)
