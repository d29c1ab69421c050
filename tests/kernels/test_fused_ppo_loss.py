"""fused_ppo_loss: Triton (interpreter) and torch paths against autograd of a float64 reference."""

import math

import pytest
import torch

from rlkd_fast.kernels.fused_ppo_loss import fused_ppo_loss, fused_ppo_loss_reference
from rlkd_fast.kernels.naive import fused_ppo_loss_naive

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
STATS = ("policy_loss", "kl", "entropy", "clip_frac", "approx_kl", "dual_clip_frac", "ratio_mean",
         "logprobs")


def make_inputs(B, T, V, dtype, per_seq=False, with_ref=True, temperature=1.0, hole_rate=0.3):
    """Random inputs whose old/ref log-probs sit near the current ones, so ratios straddle the
    clip range; the mask has holes and row 0 fully masked when B > 1."""
    logits = (torch.randn(B, T, V) * 2).to(dtype)
    ids = torch.randint(0, V, (B, T))
    logp = torch.log_softmax(logits.double() / temperature, -1).gather(-1, ids[..., None])[..., 0]
    old = (logp + 0.4 * torch.randn(B, T)).float()
    ref = (logp + 0.4 * torch.randn(B, T)).float() if with_ref else None
    adv = torch.randn(B) if per_seq else torch.randn(B, T)
    mask = torch.rand(B, T) > hole_rate
    if B > 1:
        mask[0] = False
    mask[-1, 0] = True  # at least one valid token
    return logits, ids, old, adv, mask, ref


def run_both(logits, ids, old, adv, mask, ref, backend="triton", grad_scale=1.0,
             fn=fused_ppo_loss, **kw):
    """(loss, stats, grad) from ``fn`` (fused_ppo_loss) and from autograd of the float64 token
    loop (``kernels.naive``)."""
    x = logits.clone().requires_grad_()
    loss, stats = fn(x, ids, old, adv, mask, ref_logprobs=ref, backend=backend, **kw)
    (grad_scale * loss).backward()
    x64 = logits.detach().double().requires_grad_()
    ref64 = ref.double() if ref is not None else None
    loss64, stats64 = fused_ppo_loss_naive(x64, ids, old.double(), adv.double(), mask, ref64,
                                           **kw)
    (grad_scale * loss64).backward()
    return (loss, stats, x.grad), (loss64, stats64, x64.grad)


def check(ours, ref, dtype):
    (loss, stats, grad), (loss64, stats64, grad64) = ours, ref
    assert loss.dtype == torch.float32 and loss.shape == ()
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-5, atol=1e-6)
    for name in STATS:
        assert stats[name].dtype == torch.float32 and not stats[name].requires_grad
        torch.testing.assert_close(stats[name].double(), stats64[name], rtol=1e-5, atol=2e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert grad.dtype == dtype and grad.shape == grad64.shape
    torch.testing.assert_close(grad.double(), grad64, rtol=GRAD_RTOL[dtype], atol=1e-7)


CONFIGS = [
    dict(),
    dict(kl_coef=0.1, entropy_coef=0.01, temperature=0.7, reduction="token-mean"),
    dict(kl_coef=0.2, kl_estimator="k1", clip=0.1, clip_high=0.28, dual_clip=3.0),
    dict(kl_coef=0.05, entropy_coef=0.1, dual_clip=2.0, temperature=1.3),
]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", range(len(CONFIGS)))
def test_matches_float64_reference(poisoned_outputs, backend, dtype, cfg):
    kw = CONFIGS[cfg]
    per_seq = cfg % 2 == 1  # GRPO-style [B] advantages on every other config
    B, T, V = [(4, 6, 300), (3, 5, 513), (2, 7, 1000), (5, 3, 129)][cfg]
    inputs = make_inputs(B, T, V, dtype, per_seq=per_seq, temperature=kw.get("temperature", 1))
    ours, ref = run_both(*inputs, backend=backend, **kw)
    check(ours, ref, dtype)
    assert ours[1]["clip_frac"] > 0  # the inputs do exercise the clipped branch


@pytest.mark.parametrize("shape", [(1, 1, 7), (1, 4, 33), (5, 1, 300)])
def test_odd_shapes(poisoned_outputs, shape):
    inputs = make_inputs(*shape, torch.float32, hole_rate=0.0)
    check(*run_both(*inputs, kl_coef=0.1, entropy_coef=0.05), torch.float32)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_clip_and_dual_clip_branches(backend):
    # ratios 0.5, 1.0, 3.0, 5.0, 1.5 against advantages of both signs: with clip 0.2 and
    # dual clip 2.5, tokens 0 and 4 are clipped, 2 and 3 capped by the dual clip
    logits = torch.randn(1, 5, 40)
    ids = torch.randint(0, 40, (1, 5))
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    ratio = torch.tensor([[0.5, 1.0, 3.0, 5.0, 1.5]])
    old = logp - ratio.log()
    adv = torch.tensor([[-1.0, 1.0, -1.0, -2.0, 1.0]])
    ours, ref = run_both(logits, ids, old, adv, None, None, backend=backend, dual_clip=2.5,
                         reduction="token-mean")
    check(ours, ref, torch.float32)
    stats = ours[1]
    assert stats["clip_frac"].item() == pytest.approx(2 / 5)
    assert stats["dual_clip_frac"].item() == pytest.approx(2 / 5)
    torch.testing.assert_close(stats["ratio_mean"], ratio.mean(), rtol=1e-5, atol=0)
    # only the unclipped token 1 has a gradient: -A ratio / 5 * (onehot - p)
    assert torch.equal(ours[2][0, [0, 2, 3, 4]], torch.zeros(4, 40))
    assert ours[2][0, 1].abs().sum() > 0


def test_upstream_gradient_scales_the_stored_gradient():
    inputs = make_inputs(3, 4, 200, torch.bfloat16)
    check(*run_both(*inputs, grad_scale=-2.5, kl_coef=0.1), torch.bfloat16)


def test_second_backward_is_refused():
    logits, ids, old, adv, mask, _ = make_inputs(2, 3, 50, torch.float32)
    x = logits.requires_grad_()
    loss, _ = fused_ppo_loss(x, ids, old, adv, mask)
    (2 * loss).backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_all_masked_batch_gives_zero_loss_and_zero_grad(poisoned_outputs):
    logits, ids, old, adv, _, ref = make_inputs(3, 4, 100, torch.bfloat16)
    ids[1, 2] = -100  # an ignore-index style id at a masked position is fine
    x = logits.requires_grad_()
    loss, stats = fused_ppo_loss(x, ids, old, adv, torch.zeros(3, 4), ref, kl_coef=0.1)
    loss.backward()
    assert loss.item() == 0 and all(float(stats[k].abs().sum()) == 0 for k in STATS)
    assert torch.equal(x.grad, torch.zeros_like(x.grad))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy inf * 0, in the interpreter
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_garbage_at_masked_positions_is_ignored(poisoned_outputs, backend):
    logits, ids, old, adv, mask, ref = make_inputs(3, 5, 120, torch.float32)
    ids[~mask] = -100  # ignore-index style ids
    old[~mask] = -300.0  # exp(logp - old) would overflow
    ref[~mask] = 300.0
    ours, ref64 = run_both(logits, ids, old, adv, mask, ref, backend=backend, kl_coef=0.1)
    check(ours, ref64, torch.float32)
    assert torch.isfinite(ours[2]).all()


def test_no_grad_skips_the_gradient_pass():
    logits, ids, old, adv, mask, ref = make_inputs(3, 5, 250, torch.float32)
    with torch.no_grad():
        loss, stats = fused_ppo_loss(logits, ids, old, adv, mask, ref, kl_coef=0.1)
        loss64, stats64 = fused_ppo_loss_reference(logits.double(), ids, old.double(),
                                                   adv.double(), mask, ref.double(), kl_coef=0.1)
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["entropy"].double(), stats64["entropy"], rtol=1e-5,
                               atol=1e-6)


def test_sliced_logits_and_no_mask():
    full = (torch.randn(2, 6, 301) * 2).bfloat16().requires_grad_()
    ids = torch.randint(0, 301, (2, 5))
    old = torch.randn(2, 5) - 5.0
    adv = torch.randn(2)
    loss, _ = fused_ppo_loss(full[:, :-1], ids, old, adv, None, clip=0.2)
    loss.backward()
    x64 = full.detach().double().requires_grad_()
    fused_ppo_loss_reference(x64[:, :-1], ids, old.double(), adv.double(), None)[0].backward()
    torch.testing.assert_close(full.grad.double(), x64.grad, rtol=GRAD_RTOL[torch.bfloat16],
                               atol=1e-7)


@pytest.mark.parametrize("entropy_coef", [0.0, 0.05])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_minus_inf_logits(poisoned_outputs, backend, entropy_coef):
    """-inf logits: padded vocabulary columns in every row, plus rows where some but not all
    entries are -inf. The torch path once gave NaN entropy, loss and gradient (0 * log 0), even
    at entropy_coef=0."""
    logits, ids, old, adv, mask, ref = make_inputs(3, 4, 200, torch.float32)
    banned = torch.zeros(3, 4, 200, dtype=torch.bool)
    banned[..., 190:] = True  # a vocabulary padded to a round size
    banned[1, :, ::7] = True  # banned tokens in one sequence
    banned[2, 1, :150] = True  # most of one row
    banned.scatter_(-1, ids[..., None], False)  # sampled tokens are never banned
    x = logits.masked_fill(banned, float("-inf")).requires_grad_()
    loss, stats = fused_ppo_loss(x, ids, old, adv, mask, ref, kl_coef=0.1,
                                 entropy_coef=entropy_coef, backend=backend)
    loss.backward()
    # the reference on -1e4 instead of -inf: the same softmax, with finite logits
    x64 = logits.double().masked_fill(banned, -1e4).requires_grad_()
    loss64, stats64 = fused_ppo_loss_reference(x64, ids, old.double(), adv.double(), mask,
                                               ref.double(), kl_coef=0.1,
                                               entropy_coef=entropy_coef)
    loss64.backward()
    torch.testing.assert_close(loss.double(), loss64, rtol=1e-5, atol=1e-6)
    for name in STATS:
        torch.testing.assert_close(stats[name].double(), stats64[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(x.grad[banned], torch.zeros_like(x.grad[banned]))


E20 = math.exp(20.0)  # the bound on the ratio and on k3's exponent


def extreme_cases(dual_clip, clip_high):
    """(log-ratio, advantage, expected policy term, True if its gradient must be exactly 0),
    from the docstring's definition: ratio = exp(min(d, 20)), clipped to
    [1 - clip, 1 + clip_high], the dual clip capping A < 0 at -A c."""
    cases = [
        (100.0, 0.0, 0.0, True),  # a GRPO group with equal rewards
        (-100.0, 0.0, 0.0, True),
        (100.0, 1.5, -1.5 * (1 + clip_high), True),  # A > 0: the clipped value, flat
        (30.0, 2.0, -2.0 * (1 + clip_high), True),
    ]
    if dual_clip is None:  # A < 0 unclipped: exact up to the bound, -A e^20 and flat beyond
        cases += [(100.0, -1.5, 1.5 * E20, True), (10.0, -1.5, 1.5 * math.exp(10.0), False)]
    else:  # the dual clip caps it: exact for every log-ratio
        cases += [(100.0, -1.5, 1.5 * dual_clip, True), (10.0, -1.5, 1.5 * dual_clip, True)]
    return cases


def logprobs64(logits, ids):
    return torch.log_softmax(logits.double(), -1).gather(-1, ids[..., None])[..., 0]


@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_large_log_ratios_give_the_defined_finite_values(poisoned_outputs, backend, dual_clip):
    """Log-probs from another engine, far from the policy's: exp(logp - old) overflowed fp32
    (NaN loss where A = 0, NaN gradients). Each token's term and gradient as defined."""
    cases = extreme_cases(dual_clip, clip_high=0.28)
    n = len(cases)
    logits = torch.randn(2, n, 37)  # row 0 fully masked, row 1 one token per case
    ids = torch.randint(0, 37, (2, n))
    mask = torch.zeros(2, n, dtype=torch.bool)
    mask[1] = True
    d = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    old = logprobs64(logits, ids)
    old[1] -= d
    adv = torch.zeros(2, n)
    adv[1] = torch.tensor([c[1] for c in cases])
    kw = dict(clip=0.2, clip_high=0.28, dual_clip=dual_clip, reduction="token-mean")
    ours, ref = run_both(logits, ids, old.float(), adv, mask, None, backend=backend, **kw)
    loss, stats, grad = ours
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in stats.values())
    assert loss.item() == pytest.approx(sum(c[2] for c in cases) / n, rel=1e-5, abs=1e-6)
    zero = torch.tensor([c[3] for c in cases])
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[1, zero], torch.zeros_like(grad[1, zero]))
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))
    check(ours, ref, torch.float32)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow, in the interpreter
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_zero_kl_coef_leaves_the_kl_term_out(poisoned_outputs, backend):
    """ref_logprobs 100 nats above the policy's: k3's exp(ref - logp) overflowed fp32, and
    kl_coef=0 then gave 0 * inf = NaN. Now the term is not computed at all at kl_coef=0, and
    k3 is bounded (e^20 - 21 per token, flat) when it is used; the stat is finite either way."""
    logits, ids, old, adv, mask, _ = make_inputs(3, 5, 64, torch.float32, per_seq=True)
    ref = (logprobs64(logits, ids) + 100.0).float()
    bounded_k3 = E20 - 20.0 - 1.0
    base, _ = run_both(logits, ids, old, adv, mask, None, backend=backend)
    off, _ = run_both(logits, ids, old, adv, mask, ref, backend=backend, kl_coef=0.0)
    assert torch.equal(off[0], base[0]) and torch.equal(off[2], base[2])
    assert off[1]["kl"].item() == pytest.approx(bounded_k3, rel=1e-6)
    on, on64 = run_both(logits, ids, old, adv, mask, ref, backend=backend, kl_coef=0.1)
    assert on[0].item() == pytest.approx(base[0].item() + 0.1 * bounded_k3, rel=1e-6)
    torch.testing.assert_close(on[2], base[2], rtol=0, atol=0)  # the bounded KL is flat
    check(on, on64, torch.float32)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_the_backends_agree_at_large_log_ratios(backend):
    """Random old and reference log-probs up to ~+-300 nats away, advantages with zeros."""
    logits, ids, old, adv, mask, ref = make_inputs(4, 6, 130, torch.float32)
    old = old + 100.0 * torch.randn(4, 6)
    ref = ref + 100.0 * torch.randn(4, 6)
    adv[:, ::2] = 0.0
    for kw in (dict(kl_coef=0.1), dict(kl_coef=0.05, entropy_coef=0.01, dual_clip=2.0)):
        ours, ref64 = run_both(logits, ids, old, adv, mask, ref, backend=backend, **kw)
        assert torch.isfinite(ours[0]) and torch.isfinite(ours[2]).all()
        check(ours, ref64, torch.float32)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_nan_old_log_prob_at_a_valid_token_is_not_hidden(backend):
    logits, ids, old, adv, mask, _ = make_inputs(3, 5, 64, torch.float32)
    b, t = mask.nonzero()[0].tolist()
    old[b, t] = math.nan
    for dual_clip in (None, 3.0):
        loss, _ = fused_ppo_loss(logits, ids, old, adv, mask, dual_clip=dual_clip,
                                 backend=backend)
        assert torch.isnan(loss)


LOGITS_OPS = ("fused_ppo_loss", "token_logprobs", "token_logprobs_bwd", "token_logprobs_bwd_",
              "scale_")


def test_a_second_copy_of_the_module_keeps_the_ops(poisoned_outputs):
    """transformers probes for the hub package "kernels" by importing it: with the repository root
    on sys.path that executes these files a second time. Redefining an op destroys its first
    registration and leaves the first copy's handles dangling (use after free: segfaults or
    "vector::reserve" in later calls), so the second copy must reuse the registered ops."""
    import importlib
    import sys
    import types
    from pathlib import Path

    first = importlib.import_module("rlkd_fast.kernels.fused_ppo_loss")  # the module
    ops = {name: getattr(torch.ops.rlkd_fast, name).default for name in LOGITS_OPS}
    # a package stub, so that only _common, token_logprobs and fused_ppo_loss run again (the real
    # __init__ would re-run every kernel module, and this test is about these two)
    pkg = types.ModuleType("_kernels_copy")
    pkg.__path__ = [str(Path(first.__file__).parent)]
    sys.modules[pkg.__name__] = pkg
    try:
        copy = importlib.import_module(f"{pkg.__name__}.fused_ppo_loss")
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == pkg.__name__]:
            del sys.modules[name]
    assert copy.fused_ppo_loss is not first.fused_ppo_loss  # really a second copy
    for name, op in ops.items():  # a redefinition would have replaced (and freed) the op
        assert getattr(torch.ops.rlkd_fast, name).default is op, f"rlkd_fast::{name} redefined"
    for fn in (first.fused_ppo_loss, copy.fused_ppo_loss):
        inputs = make_inputs(2, 3, 40, torch.float32, per_seq=True)
        check(*run_both(*inputs, kl_coef=0.1, fn=fn), torch.float32)


def test_real_vocab_size():
    inputs = make_inputs(2, 2, 50000, torch.bfloat16, per_seq=True, hole_rate=0.0)
    check(*run_both(*inputs, kl_coef=0.04, entropy_coef=0.01), torch.bfloat16)


def test_torch_compile_fullgraph():
    def step(logits, ids, old, adv, mask, ref):
        loss, stats = fused_ppo_loss(logits, ids, old, adv, mask, ref, kl_coef=0.1,
                                     entropy_coef=0.01)
        return 3.0 * loss, stats["clip_frac"]

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    logits, ids, old, adv, mask, ref = make_inputs(3, 4, 90, torch.float32)
    x = logits.clone().requires_grad_()
    loss, clip_frac = compiled(x, ids, old, adv, mask, ref)
    loss.backward()
    x64 = logits.double().requires_grad_()
    loss64, stats64 = fused_ppo_loss_reference(x64, ids, old.double(), adv.double(), mask,
                                               ref.double(), kl_coef=0.1, entropy_coef=0.01)
    (3.0 * loss64).backward()
    torch.testing.assert_close(loss.double(), 3.0 * loss64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(clip_frac.double(), stats64["clip_frac"])
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_clear_errors(backend):
    logits, ids, old, adv, mask, ref = make_inputs(2, 3, 10, torch.float32)
    f = lambda **kw: fused_ppo_loss(**{**dict(logits=logits, ids=ids, old_logprobs=old,
                                              advantages=adv, mask=mask, ref_logprobs=ref,
                                              backend=backend), **kw})
    bad = ids.clone()
    bad[1, 0] = 10
    with pytest.raises(ValueError, match="outside the vocabulary"):
        f(ids=bad, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="old_logprobs has shape"):
        f(old_logprobs=old[:, :2])
    with pytest.raises(ValueError, match="advantages have shape"):
        f(advantages=adv[:, :1])
    with pytest.raises(ValueError, match="mask has shape"):
        f(mask=mask[:1])
    with pytest.raises(TypeError, match="floating"):
        f(old_logprobs=old.long())
    with pytest.raises(ValueError, match="empty batch"):
        f(logits=logits[:0], ids=ids[:0], old_logprobs=old[:0], advantages=adv[:0],
          mask=mask[:0], ref_logprobs=ref[:0])
    with pytest.raises(ValueError, match="temperature"):
        f(temperature=0.0)
    with pytest.raises(ValueError, match="clip"):
        f(clip=-0.1)
    with pytest.raises(ValueError, match="clip"):
        f(clip_high=-0.1)
    with pytest.raises(ValueError, match="dual_clip"):
        f(dual_clip=0.5)
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        f(ref_logprobs=None, kl_coef=0.1)
    with pytest.raises(ValueError, match="kl_estimator"):
        f(kl_estimator="k2")
    with pytest.raises(ValueError, match="reduction"):
        f(reduction="sum")
    with pytest.raises(ValueError, match="3 dims"):
        f(logits=logits[0], ids=ids[0])


GPU_COMPILE = r"""
import importlib
import re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

tlp = importlib.import_module("rlkd_fast.kernels.token_logprobs")
rows = importlib.import_module("rlkd_fast.kernels._logits")
fpl = importlib.import_module("rlkd_fast.kernels.fused_ppo_loss")
F32 = ("k", "inv_temp", "clip_lo", "clip_hi", "dual_clip", "kl_coef", "ent_coef")


def compile_for_h100(fn, dtype, consts, num_warps, num_stages):
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = {"logits_ptr": dtype, "grad_ptr": dtype, "x_ptr": dtype,
                         "ids_ptr": "*i64"}.get(name, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32" if name in F32 else "i64" if "stride" in name else "i32"
            if name == "V" or "stride" in name:  # as specialised at launch for V % 16 == 0
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
    if "logits_ptr" in fn.arg_names:  # the vocab loops must use 128-bit loads
        assert re.search(r"ld\.global\S*\.v4\.", kernel.asm["ptx"]), fn.__name__


blocks = dict(BLOCK_R=1, BLOCK_V=8192)
for dtype in ("*bf16",):  # fp32 logits take the same code paths
    compile_for_h100(tlp._token_logprobs_fwd_kernel, dtype, {**blocks, "SUB": 256}, 8, 2)
    compile_for_h100(tlp._token_logprobs_bwd_kernel, dtype, blocks, 8, 2)
    compile_for_h100(rows.scale_kernel, dtype, dict(BLOCK=8192), 8, 2)
    for flags in ((True, True, True, True, False, True, True),
                  (False, False, False, False, True, False, False),
                  (False, True, True, False, True, True, True)):
        names = ("ADV_PER_SEQ", "HAS_REF", "KL_K3", "HAS_KL", "HAS_DUAL", "HAS_ENT", "WRITE_GRAD")
        compile_for_h100(fpl._fused_ppo_fwd_kernel, dtype,
                         {**dict(zip(names, flags)), **blocks, "SUB": 256}, 16, 2)
print("compiled")
"""


def test_kernels_compile_for_a_gpu():
    """The interpreter accepts code the GPU compiler rejects: build every kernel for sm_90."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", GPU_COMPILE], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "compiled" in out.stdout, out.stderr[-3000:]
