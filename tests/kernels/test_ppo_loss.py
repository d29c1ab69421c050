"""ppo_loss: Triton (compiled on a GPU, interpreted on CPU) and torch paths against the float64
reference and its autograd."""

import math
import os
import subprocess
import sys

import pytest
import torch

from rlkd_fast.kernels.gae import gae
from rlkd_fast.kernels.naive import ppo_loss_naive
from rlkd_fast.kernels.ppo_loss import (
    STAT_NAMES,
    _ppo_fwd_triton,
    ppo_loss,
)

REDUCTIONS = ["seq-mean-token-mean", "token-mean"]


pytestmark = pytest.mark.usefixtures("on_device", "poisoned_outputs")


def make(b=6, t=23, dtype=torch.float32, spread=0.3, poison=True):
    """Random PPO inputs with a holey mask, an all-masked row, a row with one valid token and
    NaN under the mask."""
    mask = torch.rand(b, t) > 0.3
    mask[0, t // 2:] = False
    if b > 2:
        mask[1] = False
        mask[2] = False
        mask[2, t // 3] = True
    x = dict(
        logprobs=(torch.randn(b, t) * 0.5 - 1).to(dtype),
        old_logprobs=torch.randn(b, t) * spread - 1,
        advantages=torch.randn(b, t),
        mask=mask,
        values=torch.randn(b, t).to(dtype),
        old_values=torch.randn(b, t),
        returns=torch.randn(b, t),
    )
    x["old_logprobs"] += x["logprobs"].float()  # log-ratios of about +-spread
    x["old_values"] = x["values"].float() + 0.3 * x["old_values"]
    if poison:
        for k in ("logprobs", "old_logprobs", "advantages", "values", "old_values", "returns"):
            x[k][~mask] = float("nan")
    return x


def reference(x, **kw):
    """Loss, stats and gradients of the float64 token loop on the same (rounded) inputs."""
    lp = x["logprobs"].double().requires_grad_()
    v = None if x.get("values") is None else x["values"].double().requires_grad_()
    d = {k: (None if x.get(k) is None else x[k].double())
         for k in ("old_logprobs", "advantages", "old_values", "returns")}
    loss, stats = ppo_loss_naive(lp, d["old_logprobs"], d["advantages"], x["mask"], v,
                                 d["old_values"], d["returns"], **kw)
    loss.backward()
    return loss.detach(), stats, lp.grad, None if v is None else v.grad


def run(x, backend, grad_scale=1.0, **kw):
    lp = x["logprobs"].clone().requires_grad_()
    v = None if x.get("values") is None else x["values"].clone().requires_grad_()
    loss, stats = ppo_loss(lp, x["old_logprobs"], x["advantages"], x["mask"], v,
                           x.get("old_values"), x.get("returns"), backend=backend, **kw)
    (loss * grad_scale).backward()
    return loss.detach(), stats, lp.grad, None if v is None else v.grad


def check(got, want, dtype=torch.float32, grad_scale=1.0):
    loss, stats, glp, gv = got
    rloss, rstats, rglp, rgv = want
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), rloss, rtol=1e-5, atol=1e-6)
    assert set(stats) == set(STAT_NAMES)
    for k in STAT_NAMES:
        assert stats[k].dtype == torch.float32 and not stats[k].requires_grad, k
        torch.testing.assert_close(stats[k].double(), rstats[k], rtol=1e-5, atol=1e-6, msg=k)
    tol = dict(rtol=2e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-5)
    assert glp.dtype == dtype and torch.isfinite(glp).all()
    torch.testing.assert_close(glp.double(), rglp * grad_scale, **tol)
    if rgv is not None:
        assert gv.dtype == dtype and torch.isfinite(gv).all()
        torch.testing.assert_close(gv.double(), rgv * grad_scale, **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_matches_reference(backend, dtype, reduction):
    x = make(dtype=dtype)
    kw = dict(clip=0.2, value_clip=0.2, vf_coef=0.5, reduction=reduction)
    check(run(x, backend, **kw), reference(x, **kw), dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_dual_clip_and_grad_scale(backend):
    x = make(spread=1.5)  # large ratios so the dual clip bites
    kw = dict(clip=0.1, clip_high=0.3, dual_clip=1.5, vf_coef=2.0)
    got = run(x, backend, grad_scale=-3.0, **kw)
    assert got[1]["dual_clip_frac"] > 0 and got[1]["clip_frac"] > 0
    check(got, reference(x, **kw), grad_scale=-3.0)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_policy_only_and_unclipped_value(backend):
    x = make()
    policy_only = {k: v for k, v in x.items() if k not in ("values", "old_values", "returns")}
    got = run(policy_only, backend)
    assert got[1]["value_loss"] == 0 and got[3] is None
    check(got, reference(policy_only))
    unclipped = {k: v for k, v in x.items() if k != "old_values"}
    got = run(unclipped, backend, vf_coef=1.0)
    assert got[1]["value_clip_frac"] == 0
    check(got, reference(unclipped, vf_coef=1.0))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_rows_contribute_nothing(reduction):
    """Dropping the rows without valid tokens changes nothing; an all-masked batch gives 0."""
    x = make(poison=False)
    keep = x["mask"].any(1)
    assert not keep.all()
    full = ppo_loss(**x, reduction=reduction)
    kept = ppo_loss(**{k: v[keep] for k, v in x.items()}, reduction=reduction)
    torch.testing.assert_close(full[0], kept[0])
    for k in STAT_NAMES:
        torch.testing.assert_close(full[1][k], kept[1][k])

    x["mask"] = torch.zeros_like(x["mask"])
    for backend in ("triton", "torch"):
        loss, stats, glp, gv = run(x, backend, reduction=reduction)
        assert loss == 0 and all(s == 0 for s in stats.values())
        assert (glp == 0).all() and (gv == 0).all()


@pytest.mark.parametrize("block", [(2, 8), (1, 4), (8, 32)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_several_blocks_and_programs(block, reduction):
    """Rows split over programs and over blocks: partial sums and per-row counts still add up."""
    x = make(b=7, t=29, poison=True)
    want = reference(x, vf_coef=0.3, reduction=reduction)
    loss, stats, glp, gv = _ppo_fwd_triton(
        *(x[k] for k in ("logprobs", "old_logprobs", "advantages", "mask", "values",
                         "old_values", "returns")),
        0.2, 0.2, 0.2, 0.3, None, reduction != "token-mean", True, block=block)
    torch.testing.assert_close(loss.double(), want[0], rtol=1e-5, atol=1e-6)
    for i, k in enumerate(STAT_NAMES):
        torch.testing.assert_close(stats[i].double(), want[1][k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((glp * stats[-1]).double(), want[2], rtol=2e-5, atol=1e-7)
    torch.testing.assert_close((gv * stats[-1]).double(), want[3], rtol=2e-5, atol=1e-7)


def test_mixed_dtypes_float_mask_and_strides():
    x = make(poison=False)
    x["old_logprobs"] = x["old_logprobs"].half()
    x["advantages"] = x["advantages"].t().contiguous().t()  # column-major view
    x["returns"] = torch.cat([x["returns"], x["returns"]], 1)[:, 5:5 + x["returns"].shape[1]]
    want = reference(x)
    x["mask"] = x["mask"].float()
    check(run(x, "triton"), want)


def test_backward_twice_and_no_grad():
    x = make()
    lp = x["logprobs"].clone().requires_grad_()
    loss, _ = ppo_loss(lp, x["old_logprobs"], x["advantages"], x["mask"])
    loss.backward(retain_graph=True)
    first = lp.grad.clone()
    loss.backward()
    torch.testing.assert_close(lp.grad, 2 * first)
    with torch.no_grad():
        loss2, _ = ppo_loss(lp, x["old_logprobs"], x["advantages"], x["mask"])
    assert not loss2.requires_grad
    torch.testing.assert_close(loss2, loss.detach())


def test_compile_fullgraph_gae_then_loss(recording_backend):
    """GAE + loss + backward under torch.compile(fullgraph=True) match eager (aot_eager backend:
    same graph and fake kernels as inductor, without its ~30 s C++ build on this CPU)."""
    x = make(b=4, t=9, poison=False)
    rewards = torch.randn(4, 9)

    def step(lp, v):
        adv, ret = gae(rewards, v, x["mask"], gamma=1.0, lam=0.95, whiten=True)
        loss, stats = ppo_loss(lp, x["old_logprobs"], adv, x["mask"], v, x["old_values"], ret)
        return loss + 0 * stats["clip_frac"]

    graphs = []
    compiled = torch.compile(step, fullgraph=True, backend=recording_backend(graphs))
    grads = []
    for fn in (compiled, step):
        lp = x["logprobs"].clone().requires_grad_()
        v = x["values"].clone().requires_grad_()
        loss = fn(lp, v)
        loss.backward()
        grads.append((loss.detach(), lp.grad, v.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert len(graphs) == 1
    assert "rlkd_fast.gae" in graphs[0] and "rlkd_fast.ppo_loss_fwd" in graphs[0]


def test_errors():
    x = make(b=2, t=5, poison=False)
    lp, olp, adv, m = x["logprobs"], x["old_logprobs"], x["advantages"], x["mask"]
    with pytest.raises(ValueError, match="clip"):
        ppo_loss(lp, olp, adv, m, clip=-0.1)
    with pytest.raises(ValueError, match="value_clip"):
        ppo_loss(lp, olp, adv, m, x["values"], x["old_values"], x["returns"], value_clip=-1)
    with pytest.raises(ValueError, match="clip_high"):
        ppo_loss(lp, olp, adv, m, clip_high=-0.2)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_loss(lp, olp, adv, m, dual_clip=1.0)
    with pytest.raises(ValueError, match="reduction"):
        ppo_loss(lp, olp, adv, m, reduction="sum")
    with pytest.raises(ValueError, match="returns"):
        ppo_loss(lp, olp, adv, m, values=x["values"])
    with pytest.raises(ValueError, match="old_values"):
        ppo_loss(lp, olp, adv, m, old_values=x["old_values"])
    with pytest.raises(ValueError, match="shape"):
        ppo_loss(lp, olp[:, :4], adv, m)
    with pytest.raises(TypeError, match="dtype"):
        ppo_loss(lp, olp, adv.long(), m)
    with pytest.raises(ValueError, match="empty"):
        ppo_loss(lp[:0], olp[:0], adv[:0], m[:0])
    with pytest.raises(ValueError, match="on meta"):
        ppo_loss(lp, olp.to("meta"), adv, m)


# Compiles every kernel of gae, ppo_loss and grpo_advantages for an H100 (sm_90) down to a cubin
# with the ptxas bundled in the triton wheel, so GPU-only compile errors show on CPU-only CI.
# It runs in a subprocess: the interpreter mode the tests use cannot compile.
_SM90_SCRIPT = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
try:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import triton.backends.nvidia  # noqa: F401
except ImportError:
    sys.exit(77)
import rlkd_fast.kernels.gae, rlkd_fast.kernels.ppo_loss, rlkd_fast.kernels.grpo  # noqa: E401
gae, ppo, grpo = (sys.modules["rlkd_fast.kernels." + m] for m in ("gae", "ppo_loss", "grpo"))
INTS = {"B", "T", "N", "P", "G", "NUM_CHUNKS", "NUM_GROUPS"}

def build(fn, warps, ptr_types=None, **constexprs):
    sig = {}
    for p in fn.params:
        name = p.name
        if p.is_constexpr:
            sig[name] = "constexpr"
        elif name in INTS or name.startswith(("s_", "stride")):
            sig[name] = "i32"
        elif name.isupper():
            sig[name] = (ptr_types or {}).get(name, "*fp32")
        else:
            sig[name] = "fp32"
    src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert kernel.asm["cubin"], fn
    print(fn.fn.__name__, constexprs, "ok")

u8 = {"M": "*u8"}
for whiten in (True, False):
    build(gae._gae_kernel, 8, u8, HAS_MASK=True, WHITEN=whiten, BLOCK_B=1, BLOCK_T=2048)
build(gae._gae_kernel, 4, None, HAS_MASK=False, WHITEN=True, BLOCK_B=4, BLOCK_T=256)
build(gae._whiten_kernel, 8, u8, HAS_MASK=True, BLOCK_B=1, BLOCK_T=2048, BLOCK_S=256)
low = {"M": "*u8", "LP": "*bf16", "V": "*fp16"}
for dual, seq in ((False, True), (True, False)):
    build(ppo._ppo_fwd_kernel, 8, low, HAS_MASK=True, HAS_VALUES=True, HAS_OLD_VALUES=True,
          DUAL=dual, SEQ_MEAN=seq, NEED_GRAD=True, BLOCK_B=1, BLOCK_T=2048)
build(ppo._ppo_fwd_kernel, 2, None, HAS_MASK=False, HAS_VALUES=False, HAS_OLD_VALUES=False,
      DUAL=False, SEQ_MEAN=True, NEED_GRAD=False, BLOCK_B=2, BLOCK_T=256)
build(ppo._ppo_finalize_kernel, 4, None, BLOCK_P=256)
build(ppo._ppo_bwd_kernel, 8, {"DLP": "*bf16", "DV": "*fp16"}, HAS_VALUES=True, BLOCK=2048)
build(grpo._grpo_kernel, 4, {"R": "*bf16"}, SCALE=True, BLOCK_N=256, BLOCK_G=16)
"""


def test_kernels_compile_for_h100():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _SM90_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode == 77:
        pytest.skip("this triton has no NVIDIA backend to compile with")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" ok") == 10


# ------------------------------------------------------------------------------------------------
# Large log-ratios (log-probs from another engine): exp overflows fp32 above ~88.7
# ------------------------------------------------------------------------------------------------
E20 = math.exp(20.0)  # the bound on the ratio


def extreme_cases(dual_clip, clip_high):
    """(log-ratio, advantage, expected per-token loss, True if its gradient must be exactly 0),
    written from the docstring's definition: rho = exp(min(d, 20)), clipped to
    [1 - clip, 1 + clip_high], dual clip capping A < 0 at -A c."""
    cases = [
        (100.0, 0.0, 0.0, True),        # a GRPO group with equal rewards
        (-100.0, 0.0, 0.0, True),
        (30.0, 0.0, 0.0, True),
        (100.0, 1.5, -1.5 * (1 + clip_high), True),  # A > 0: the clipped value, flat
        (30.0, 2.0, -2.0 * (1 + clip_high), True),
        (-100.0, 1.5, -1.5 * math.exp(-100.0), False),  # tiny ratio, unclipped (grad ~ 0)
    ]
    if dual_clip is None:  # A < 0 unclipped: exact up to the bound, -A e^20 and flat beyond
        cases += [(100.0, -1.5, 1.5 * E20, True), (10.0, -1.5, 1.5 * math.exp(10.0), False)]
    else:  # the dual clip caps it: exact for every log-ratio
        cases += [(100.0, -1.5, 1.5 * dual_clip, True), (10.0, -1.5, 1.5 * dual_clip, True)]
    return cases


@pytest.mark.parametrize("dual_clip", [None, 3.0])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_large_log_ratios_give_the_defined_finite_values(backend, dual_clip):
    """Loss and gradients finite, each token's term and gradient as defined, both backends and
    the float64 reference agreeing; before, A = 0 gave NaN (torch), A < 0 inf and NaN
    gradients, and the backends disagreed."""
    cases = extreme_cases(dual_clip, clip_high=0.28)
    n = len(cases)
    # one token per case in row-major order, each row with masked holes (NaN under them)
    b, t = 3, 2 * math.ceil(n / 3)
    mask = torch.zeros(b, t, dtype=torch.bool)
    mask.view(-1)[0:2 * n:2] = True
    lp = torch.full((b, t), float("nan"))
    olp, adv = lp.clone(), lp.clone()
    d = torch.tensor([c[0] for c in cases])
    lp[mask] = -0.5 - torch.rand(n).mul(4).round() / 4  # exact in fp32: lp - olp == d exactly
    olp[mask] = lp[mask] - d
    adv[mask] = torch.tensor([c[1] for c in cases])
    x = dict(logprobs=lp, old_logprobs=olp, advantages=adv, mask=mask)
    kw = dict(clip=0.2, clip_high=0.28, dual_clip=dual_clip, reduction="token-mean")
    loss, stats, glp, _ = got = run(x, backend, **kw)
    want_loss = sum(c[2] for c in cases) / n
    assert torch.isfinite(loss) and all(torch.isfinite(s) for s in stats.values())
    assert loss.item() == pytest.approx(want_loss, rel=1e-6, abs=1e-6)
    zero_grad = torch.tensor([c[3] for c in cases])
    assert torch.isfinite(glp).all()
    assert (glp[mask][zero_grad] == 0).all() and (glp[~mask] == 0).all()
    if dual_clip is None:  # the exact gradient under the bound: -A rho / n
        assert glp[mask][-1].item() == pytest.approx(1.5 * math.exp(10.0) / n, rel=1e-6)
    check(got, reference(x, **kw))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_the_two_backends_agree_at_large_log_ratios(backend):
    """Random batches whose log-ratios reach +-120, advantages with zeros, masks with holes."""
    x = make(b=5, t=37, spread=60.0)
    x["advantages"][:, ::3] = 0.0
    for kw in (dict(), dict(dual_clip=2.0, clip_high=0.3, vf_coef=0.5)):
        got = run(x, backend, **kw)
        assert torch.isfinite(got[0]) and torch.isfinite(got[2]).all()
        check(got, reference(x, **kw))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_nan_log_prob_at_a_valid_token_is_not_hidden(backend):
    """The bound on the ratio must not turn a NaN log-prob into a finite loss (the Triton path
    once gave the clipped value for it)."""
    x = make(poison=False)
    x["logprobs"][x["mask"]] = x["logprobs"][x["mask"]].index_fill(0, torch.tensor([3]), math.nan)
    for dual_clip in (None, 3.0):
        loss, _ = ppo_loss(x["logprobs"], x["old_logprobs"], x["advantages"], x["mask"],
                           dual_clip=dual_clip, backend=backend)
        assert torch.isnan(loss)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy inf * 0, in the interpreter
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_zero_vf_coef_leaves_the_value_term_out(backend):
    """vf_coef = 0 with a value error whose square overflows fp32: the loss is the policy loss
    and the values get a zero gradient, where 0 * inf gave NaN."""
    x = make(poison=False)
    x["returns"] = x["returns"] + 1e20  # (V - R)^2 = 1e40 > fp32 max
    policy_only = {k: v for k, v in x.items() if k not in ("values", "old_values", "returns")}
    loss, stats, glp, gv = run(x, backend, vf_coef=0.0)
    loss0, _, glp0, _ = run(policy_only, backend)
    assert stats["value_loss"] == math.inf  # reported as it is
    assert torch.equal(loss, loss0) and torch.equal(glp, glp0)
    assert gv is None or torch.equal(gv, torch.zeros_like(gv))  # torch: not in the graph
