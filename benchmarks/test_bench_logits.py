"""Log-probs and the clipped PPO/GRPO loss from logits, forward + backward.

Ours (``fused_ppo_loss``: one kernel, gradient written in the forward pass; ``token_logprobs``)
against the usual eager code (fp32 ``log_softmax`` + gather + loss), ``torch.compile`` of the same
and Liger-Kernel's ``triton_grpo_loss`` when ``liger_kernel`` is importable. GPU sizes are the
anchors' (bf16 logits, per-sequence advantages, k3 KL to a reference); on CPU a tiny smoke size
runs under the Triton interpreter so the file keeps working, and its timings mean nothing.
Each row: median time of forward + backward (``torch.autograd.grad``, so no ``.grad``
accumulation pass is timed), the fraction of copy bandwidth for the bytes the op must move
(fused loss: one read of the logits + one write of their gradient; token_logprobs: the backward
needs a second read) and peak memory above the inputs.
"""

import importlib

import pytest
import torch

from benchmarks._harness import Table, bench, copy_bandwidth, device, on_gpu, peak_memory_mb
from rlkd_fast.kernels.fused_ppo_loss import fused_ppo_loss
from rlkd_fast.kernels.token_logprobs import token_logprobs

# the module itself (the package exports a function of the same name)
fused_module = importlib.import_module("rlkd_fast.kernels.fused_ppo_loss")

SIZES = [(16, 1024, 50000), (8, 1024, 151936)] if on_gpu() else [(2, 8, 300)]
CLIP, KL_COEF = 0.2, 0.04


def eager_loss(logits, ids, old, adv, mask, ref):
    """Peer-style GRPO loss: fp32 log_softmax + gather, clipped surrogate, k3 KL,
    mean over each sequence's tokens, then over sequences."""
    logp = torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    ratio = torch.exp(logp - old)
    a = adv.unsqueeze(-1)
    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - CLIP, 1 + CLIP))
    d = ref - logp
    per_token = pg + KL_COEF * (torch.exp(d) - d - 1)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def eager_logprobs(logits, ids):
    return torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def liger_loss():
    """Liger's triton_grpo_loss reduced like ours, or None when liger_kernel is not installed."""
    try:
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss
    except Exception:
        return None

    def loss(logits_plus_one, ids, old, adv, mask, ref):
        # Liger takes logits [B, T+1, V] and drops the last position itself
        out = triton_grpo_loss(logits_plus_one, old, ref, ids, adv, mask, temperature=1.0,
                               beta=KL_COEF, eps_low=CLIP, eps_high=CLIP)
        per_token = out[0]
        if per_token.dim() == 0:
            return per_token
        m = mask.float()
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()

    return loss


def fwd_bwd(loss_fn, logits, *args):
    """One forward + backward; the gradient is returned, never accumulated."""
    return lambda: torch.autograd.grad(loss_fn(logits, *args), logits)


def make_inputs(B, T, V):
    dev = device()
    # [B, T+1, V]: Liger reads it whole, the others read the view [:, :-1] in place
    full = (torch.randn(B, T + 1, V, device=dev) * 2).to(torch.bfloat16).requires_grad_()
    ids = torch.randint(0, V, (B, T), device=dev)
    with torch.no_grad():
        logp = torch.log_softmax(full[:, :-1].float(), -1).gather(-1, ids[..., None])[..., 0]
    old = logp + 0.3 * torch.randn(B, T, device=dev)
    ref = logp + 0.3 * torch.randn(B, T, device=dev)
    adv = torch.randn(B, device=dev)
    lengths = torch.randint(T // 2, T + 1, (B,), device=dev)  # right padding
    mask = (torch.arange(T, device=dev)[None] < lengths[:, None]).float()
    return full, ids, old, adv, mask, ref


def _add(table, op, size, impl, fn, nbytes, note=""):
    table.add(op=op, size=size, impl=impl, ms=bench(fn), bytes_moved=nbytes,
              peak_mb=peak_memory_mb(fn), note=note)


@pytest.mark.parametrize("B,T,V", SIZES)
def test_bench_fused_ppo_loss(B, T, V):
    full, ids, old, adv, mask, ref = make_inputs(B, T, V)
    logits = full[:, :-1]
    ours = lambda x, *a: fused_ppo_loss(x, ids, old, adv, mask, ref, kl_coef=KL_COEF, clip=CLIP)[0]
    eager = lambda x, *a: eager_loss(x, ids, old, adv, mask, ref)
    torch.testing.assert_close(ours(logits), eager(logits), rtol=1e-4, atol=1e-5)

    table = Table(f"fused_ppo_loss_B{B}_T{T}_V{V}", copy_bandwidth())
    size = f"B={B} T={T} V={V} bf16"
    nbytes = 2 * logits.numel() * logits.element_size()  # read the logits, write their grad
    _add(table, "ppo_from_logits", size, "eager", fwd_bwd(eager, logits), nbytes,
         "log_softmax(float)+gather+loss")
    if on_gpu():
        compiled = torch.compile(eager_loss)
        _add(table, "ppo_from_logits", size, "torch.compile(eager)",
             fwd_bwd(lambda x: compiled(x, ids, old, adv, mask, ref), logits), nbytes)
    else:
        table.add(op="ppo_from_logits", size=size, impl="torch.compile(eager)", ms=None,
                  note="skipped on CPU (compile time)")
    liger = liger_loss() if on_gpu() else None
    if liger is not None:
        liger_logits = full.detach().clone().requires_grad_()  # its backward writes in place
        _add(table, "ppo_from_logits", size, "liger triton_grpo_loss",
             fwd_bwd(lambda x: liger(x, ids, old, adv, mask, ref), liger_logits), nbytes)
    else:
        table.add(op="ppo_from_logits", size=size, impl="liger triton_grpo_loss", ms=None,
                  note="liger_kernel not installed" if on_gpu() else "GPU only")
    _add(table, "ppo_from_logits", size, "ours fused_ppo_loss", fwd_bwd(ours, logits), nbytes,
         "target >= 85% of copy, >= 1.4x liger")
    if on_gpu():  # what the autotuner chose, and every config's median time
        tuner = fused_module._fused_tuned
        table.rows[-1].extra["best_config"] = str(getattr(tuner, "best_config", None))
        timings = getattr(tuner, "configs_timings", None) or {}
        table.rows[-1].extra["config_ms"] = {str(c): (t[0] if isinstance(t, list | tuple) else t)
                                             for c, t in timings.items()}
    ours_row = table.rows[-1]
    liger_row = next((r for r in table.rows if r.impl.startswith("liger") and r.ms), None)
    if liger_row is not None:
        ours_row.extra["speedup_vs_liger"] = liger_row.ms / ours_row.ms
    table.report(baseline_impl="eager")


@pytest.mark.parametrize("B,T,V", SIZES[:1])
def test_bench_token_logprobs(B, T, V):
    full, ids, *_ = make_inputs(B, T, V)
    logits = full[:, :-1]
    grad_out = torch.randn(B, T, device=device())
    ours = lambda x: (token_logprobs(x, ids) * grad_out).sum()
    eager = lambda x: (eager_logprobs(x, ids) * grad_out).sum()
    torch.testing.assert_close(ours(logits), eager(logits), rtol=1e-4, atol=1e-3)

    table = Table(f"token_logprobs_B{B}_T{T}_V{V}", copy_bandwidth())
    size = f"B={B} T={T} V={V} bf16"
    nbytes = 3 * logits.numel() * logits.element_size()  # fwd read, bwd read, grad write
    _add(table, "token_logprobs", size, "eager", fwd_bwd(eager, logits), nbytes,
         "log_softmax(float)+gather")
    if on_gpu():
        compiled = torch.compile(eager_logprobs)
        _add(table, "token_logprobs", size, "torch.compile(eager)",
             fwd_bwd(lambda x: (compiled(x, ids) * grad_out).sum(), logits), nbytes)
    _add(table, "token_logprobs", size, "ours", fwd_bwd(ours, logits), nbytes)
    table.report(baseline_impl="eager")


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-s"]))
