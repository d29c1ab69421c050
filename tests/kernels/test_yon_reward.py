"""YoN judge reward: both backends against float64 references (the row loop of ``kernels.naive``;
the Triton path runs in the CPU interpreter), from logits and from the judge's hidden state."""

import importlib
import math

import pytest
import torch
from helpers import assert_matches

from rlkd_fast.kernels.naive import yon_reward_naive
from rlkd_fast.kernels.yon_reward import (
    yon_reward,
    yon_reward_from_hidden,
    yon_reward_from_hidden_reference,
    yon_reward_reference,
)

# the package exports the function under the module's name, so reach the module explicitly
mod = importlib.import_module("rlkd_fast.kernels.yon_reward")
BACKENDS = ["triton", "torch"]
YES, NO = [5, 17, 640], [3, 999]
INF = float("inf")


pytestmark = pytest.mark.usefixtures("on_device")


def _check(got, ref, atol=1e-6, rtol=1e-5):
    """Every element of each output against the float64 reference (NaN where it is NaN)."""
    for g, r in zip(got, ref, strict=True):
        assert_matches(g, r, rtol=rtol, atol=atol, equal_nan=True)


def _logits(rows, vocab, dtype=torch.float32, scale=3.0):
    return (torch.randn(rows, vocab, dtype=torch.float64) * scale).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_random_logits_match_reference(backend, dtype, poisoned_outputs):
    # V=1000 is no multiple of the 128-wide tiles; the rows are split over 8 programs each
    x = _logits(7, 1000, dtype)
    x[:, YES[0]] += 4  # spread the rewards across the threshold
    got = yon_reward(x, YES, NO, tau=1.7, delta=0.55, backend=backend)
    ref = yon_reward_naive(x, YES, NO, tau=1.7, delta=0.55)
    _check(got, ref)
    assert (ref[0] == 0).any() and (ref[0] > 0.55).any()
    assert (got[1] > 0).all() and (got[1] < 1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_reward_only(backend, poisoned_outputs):
    x = _logits(4, 300, torch.bfloat16)
    reward, mass = yon_reward(x, YES[:2], NO[:1], tau=0.6, delta=0.2, with_mass=False,
                              backend=backend)
    assert mass is None
    _check([reward], yon_reward_reference(x, YES[:2], NO[:1], tau=0.6, delta=0.2)[:1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vocab", [37, 1001])
def test_single_row_and_tiny_vocab(backend, vocab, poisoned_outputs):
    x = _logits(1, vocab)
    got = yon_reward(x, 4, torch.tensor([36, 2]), tau=0.5, delta=0.0, backend=backend)
    _check(got, yon_reward_reference(x, [4], [36, 2], tau=0.5, delta=0.0))


def test_several_tiles_per_program(monkeypatch, poisoned_outputs):
    monkeypatch.setattr(mod, "_TARGET_PROGRAMS", 9)
    assert mod._plan(3, 1000) == (128, 3, 3)  # 8 tiles per row: 3 + 3 + 2
    x = _logits(3, 1000)
    _check(yon_reward(x, YES, NO, backend="triton"), yon_reward_reference(x, YES, NO))


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_rows(backend, poisoned_outputs):
    full = _logits(4 * 3, 513).view(4, 3, 513)
    last = full[:, -1]  # the judge's last position: row stride 3*V, contiguous vocab
    _check(yon_reward(last, YES[:2], NO[:1], backend=backend),
           yon_reward_reference(last.contiguous(), YES[:2], NO[:1]))
    cols = _logits(513, 4).T  # vocab not contiguous: copied first
    _check(yon_reward(cols, YES[:2], NO[:1], backend=backend),
           yon_reward_reference(cols.contiguous(), YES[:2], NO[:1]))


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # interpreter's numpy
@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_logits(backend, poisoned_outputs):
    # rows near +1e4 whose sides differ by O(1): the score must not lose the gap to rounding
    # V=1100: 5 programs per row (256-wide tiles), so the merge pads its partials to 8
    x = 1e4 + _logits(6, 1100, scale=1.0)
    x[0, 256:512] = -INF  # a whole -inf tile
    x[1, YES[1]] = -INF  # one yes id at -inf: the other yes ids carry the side
    x[2, YES] = -INF  # no chance of Yes -> reward 0
    x[3, NO] = -INF  # no chance of No -> s = 1
    x[4, YES + NO] = -INF  # neither: undefined score -> reward 0, mass 0
    x[5] = -1e4 + _logits(1, 1100, scale=1.0)
    got = yon_reward(x, YES, NO, tau=0.8, delta=0.3, backend=backend)
    ref = yon_reward_reference(x, YES, NO, tau=0.8, delta=0.3)
    _check(got, ref, atol=1e-6, rtol=1e-5)
    assert got[0][2] == 0 and got[0][3] == 1 and got[0][4] == 0 and got[1][4] == 0
    x16 = _logits(3, 1000, torch.float16, scale=2e4)  # fp16 near its range
    _check(yon_reward(x16, YES, NO, backend=backend), yon_reward_reference(x16, YES, NO))


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_and_tau(backend):
    tau, delta = 0.25, 0.7
    gap_at_delta = tau * math.log(delta / (1 - delta))  # sigmoid(gap / tau) == delta
    gaps = torch.tensor([gap_at_delta - 1e-3, gap_at_delta + 1e-3, -2.0, 3.0, 0.0, 200.0])
    x = torch.zeros(6, 50)
    x[:, 7] = gaps  # one yes id, one no id at 0
    reward, _ = yon_reward(x, 7, 8, tau=tau, delta=delta, backend=backend)
    s = torch.sigmoid(gaps.double() / tau)
    expect = torch.where(s >= delta, s, 0.0)
    assert reward[0] == 0 and reward[1] > delta
    torch.testing.assert_close(reward.double(), expect, atol=1e-6, rtol=1e-6)
    for d in (0.0, 0.5, 1.0):  # s == d exactly at gap 0 (0.5) and gap 200 (1.0): kept
        got, _ = yon_reward(x, 7, 8, tau=tau, delta=d, backend=backend)
        assert got[4] == (0.5 if d <= 0.5 else 0.0) and got[5] == 1.0
        torch.testing.assert_close(got.double(), torch.where(s >= d, s, 0.0), atol=1e-6,
                                   rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_vocab(backend, poisoned_outputs):
    x = _logits(2, 151936, torch.bfloat16)
    yes, no = [9454, 9693, 151935], [2753, 2308, 0]
    _check(yon_reward(x, yes, no, tau=1.3, backend=backend),
           yon_reward_naive(x, yes, no, tau=1.3))


def test_duplicate_ids_count_once():
    x = _logits(3, 100)
    a = yon_reward(x, [5, 5, 6], [7, 7], backend="triton")
    b = yon_reward_reference(x, [5, 6], [7])
    _check(a, b)


def test_tickets_stay_zeroed_and_not_differentiable():
    x = _logits(5, 1000).requires_grad_()
    for _ in range(2):  # a second call reuses the cached tickets
        reward, mass = yon_reward(x, YES, NO, backend="triton")
    assert not reward.requires_grad and not mass.requires_grad
    _check((reward, mass), yon_reward_reference(x, YES, NO))
    assert all(int(t.abs().sum()) == 0 for t in mod._ticket_cache.values())


def test_torch_compile_fullgraph():
    def judge(logits, hidden, weight):
        r1, m1 = yon_reward(logits, YES, NO, tau=0.9)
        r2, _ = yon_reward_from_hidden(hidden, weight, YES, NO, tau=0.9)
        return r1 + r2, m1

    x, h, w = _logits(3, 1000), torch.randn(3, 40), torch.randn(1000, 40) * 0.3
    compiled = torch.compile(judge, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, h, w), judge(x, h, w))


# ----------------------------------------------------------------------------- from hidden


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_from_hidden_equals_full_logits(backend, with_bias, poisoned_outputs):
    rows, width, vocab = 5, 600, 9000  # H spans 2 blocks, one masked; V spans 3 head chunks
    h = torch.randn(rows, width)
    w = torch.randn(vocab, width) / width**0.5 * 3
    bias = torch.randn(vocab) if with_bias else None
    reward, mass = yon_reward_from_hidden(h, w, YES, NO, tau=0.7, delta=0.45, bias=bias,
                                          with_mass=True, backend=backend)
    logits = h @ w.T + (bias if with_bias else 0)
    full = yon_reward(logits, YES, NO, tau=0.7, delta=0.45, backend=backend)
    _check((reward, mass), [t.double() for t in full], atol=2e-5, rtol=1e-4)
    ref = yon_reward_from_hidden_reference(h, w, YES, NO, tau=0.7, delta=0.45, bias=bias)
    _check((reward, mass), ref, atol=2e-6, rtol=2e-5)
    assert (ref[0] == 0).any() and (ref[0] > 0).any()
    only, none = yon_reward_from_hidden(h, w, YES, NO, tau=0.7, delta=0.45, bias=bias,
                                        backend=backend)
    assert none is None and torch.equal(only, reward)


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_hidden_with_a_padded_vocabulary(backend, poisoned_outputs):
    """A -inf bias on the padding rows of the head (and on one yes id): they carry no mass."""
    h, w = torch.randn(4, 48), torch.randn(1100, 48) * 0.5
    bias = torch.zeros(1100)
    bias[1030:] = -INF  # a vocabulary padded to a round size
    bias[YES[0]] = -INF  # one yes id masked: the other ones carry the side
    got = yon_reward_from_hidden(h, w, YES, NO, tau=0.9, delta=0.2, bias=bias, with_mass=True,
                                 backend=backend)
    finite = bias.masked_fill(bias.isinf(), -1e4)  # the same softmax, with finite logits
    _check(got, yon_reward_from_hidden_reference(h, w, YES, NO, tau=0.9, delta=0.2,
                                                 bias=finite), atol=2e-6, rtol=2e-5)


def test_from_hidden_many_rows(poisoned_outputs):
    # 70 rows: two 64-row tiles in the fused mass GEMM; V=300 ends inside a 128-wide tile
    h, w = torch.randn(70, 40), torch.randn(300, 40) * 0.5
    h[3] = 0.0  # every logit 0: two ids a side give s = 0.5 (kept at delta 0.5), mass 4/300
    got = yon_reward_from_hidden(h, w, [5, 6], [7, 299], tau=0.9, with_mass=True,
                                 backend="triton")
    ref = yon_reward_from_hidden_reference(h, w, [5, 6], [7, 299], tau=0.9)
    _check(got, ref, atol=2e-6, rtol=2e-5)
    assert got[0][3] == 0.5 and abs(got[1][3] - 4 / 300) < 1e-7


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_hidden_half_inputs(backend, dtype, poisoned_outputs):
    h = torch.randn(3, 64).to(dtype)
    w = (torch.randn(500, 64) * 0.4).to(dtype)
    bias = torch.randn(500).to(dtype)
    got = yon_reward_from_hidden(h, w, 9, [10, 499], bias=bias, tau=2.0, with_mass=True,
                                 backend=backend)
    # the reference sees the same rounded inputs; the rest is fp32 accumulation
    _check(got, yon_reward_from_hidden_reference(h, w, [9], [10, 499], tau=2.0, bias=bias),
           atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"logits": torch.zeros(4)}, ValueError, "must have 2 dims"),
        ({"logits": torch.zeros(2, 9, dtype=torch.int64)}, TypeError, "dtype"),
        ({"logits": torch.zeros(0, 9)}, ValueError, "empty"),
        ({"yes_ids": [9]}, ValueError, r"outside the vocabulary \[0, 9\)"),
        ({"no_ids": -1}, ValueError, "outside the vocabulary"),
        ({"yes_ids": []}, ValueError, "yes_ids is empty"),
        ({"yes_ids": [1, 2], "no_ids": [2]}, ValueError, "disjoint"),
        ({"yes_ids": torch.tensor([1.0])}, TypeError, "integer token ids"),
        ({"yes_ids": torch.tensor([[1]])}, ValueError, "1-D"),
        ({"yes_ids": "Yes"}, TypeError, "sequence of ints"),
        ({"yes_ids": [1.0]}, TypeError, "must hold ints"),
        ({"tau": 0.0}, ValueError, "tau"),
        ({"tau": INF}, ValueError, "tau"),
        ({"delta": 1.5}, ValueError, "delta"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
    ],
)
def test_bad_inputs(kwargs, err, match):
    args = {"logits": torch.zeros(2, 9), "yes_ids": [1], "no_ids": [2]} | kwargs
    with pytest.raises(err, match=match):
        yon_reward(**args)


def test_bad_hidden_inputs():
    h, w = torch.zeros(2, 8), torch.zeros(20, 8)
    with pytest.raises(ValueError, match=r"expected \[V, 8\]"):
        yon_reward_from_hidden(h, torch.zeros(20, 7), [1], [2])
    with pytest.raises(ValueError, match="bias must be"):
        yon_reward_from_hidden(h, w, [1], [2], bias=torch.zeros(19))
    with pytest.raises(ValueError, match="lm_head_weight is on meta"):
        yon_reward_from_hidden(h, w.to("meta"), [1], [2])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        yon_reward_from_hidden(h, w, [20], [2])
    with pytest.raises(ValueError, match="empty"):
        yon_reward_from_hidden(torch.zeros(0, 8), w, [1], [2])
