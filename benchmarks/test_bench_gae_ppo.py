"""GAE + clipped PPO/value loss on per-token tensors, forward + backward (fp32).

Ours (``gae`` with batch whitening, then ``ppo_loss`` whose forward kernel writes the gradients)
against the peer-style pipeline: a Python reverse loop over T for GAE (as TRL, OpenRLHF, verl
and ReFT do) + masked whitening + the eager loss, and against ``torch.compile`` of the loss alone
(no GAE). GPU sizes are the anchors'; on CPU a tiny smoke size runs under the Triton interpreter
so the file keeps working, and its timings mean nothing.
Each row: median time (``torch.autograd.grad``, so no ``.grad`` accumulation is timed), the
fraction of copy bandwidth for the bytes the loss must move (7 [B,T] fp32 inputs read, 2
gradients written; the anchors' floor) and peak memory above the inputs.
"""

import pytest
import torch

from benchmarks._harness import Table, bench, copy_bandwidth, device, on_gpu, peak_memory_mb
from rlkd_fast.kernels.gae import gae, masked_whiten
from rlkd_fast.kernels.ppo_loss import ppo_loss

SIZES = [(64, 512), (256, 2048)] if on_gpu() else [(4, 16)]
GAMMA, LAM, CLIP, VALUE_CLIP, VF_COEF = 1.0, 0.95, 0.2, 0.2, 0.1


def loop_gae(rewards, values, mask, gamma=GAMMA, lam=LAM):
    """Peer-style GAE: one step of the reverse recurrence per Python iteration; masked steps
    carry the next value and advantage through."""
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    steps = []
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = m * (delta + gamma * lam * next_adv) + (1 - m) * next_adv
        next_value = m * values[:, t] + (1 - m) * next_value
        steps.append(next_adv)
    adv = torch.stack(steps[::-1], 1) * mask
    return adv, (adv + values) * mask


def eager_loss(logp, old_logp, adv, mask, values, old_values, returns):
    """ReFT's clipped surrogate + clipped value loss, per-sequence token mean then batch mean."""
    n = mask.sum(-1).clamp(min=1)
    ratio = torch.exp(logp - old_logp)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - CLIP, 1 + CLIP))
    v_clip = torch.minimum(torch.maximum(values, old_values - VALUE_CLIP), old_values + VALUE_CLIP)
    vf = 0.5 * torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)
    policy = ((pg * mask).sum(-1) / n).mean()
    value = ((vf * mask).sum(-1) / n).mean()
    return policy + VF_COEF * value


def make_inputs(B, T):
    dev = device()
    lengths = torch.randint(T // 2, T + 1, (B,), device=dev)  # right padding
    mask = (torch.arange(T, device=dev)[None] < lengths[:, None]).float()
    rewards = 0.01 * torch.randn(B, T, device=dev) * mask
    rewards[torch.arange(B, device=dev), lengths - 1] += 1.0  # terminal reward
    old_values = torch.randn(B, T, device=dev) * mask
    values = (old_values + 0.1 * torch.randn(B, T, device=dev)).requires_grad_()
    old_logp = -torch.rand(B, T, device=dev) * 3
    logp = (old_logp + 0.2 * torch.randn(B, T, device=dev)).requires_grad_()
    return rewards, old_values, mask, logp, old_logp, values


def _add(table, op, size, impl, fn, nbytes, note=""):
    table.add(op=op, size=size, impl=impl, ms=bench(fn), bytes_moved=nbytes,
              peak_mb=peak_memory_mb(fn), note=note)


@pytest.mark.parametrize("B,T", SIZES)
def test_bench_gae_ppo(B, T):
    rewards, old_values, mask, logp, old_logp, values = make_inputs(B, T)
    bool_mask = mask.bool()

    def peer(loss_fn):
        def step():
            adv, ret = loop_gae(rewards, old_values, mask)
            adv = masked_whiten(adv, bool_mask)
            loss = loss_fn(logp, old_logp, adv, mask, values, old_values, ret)
            return torch.autograd.grad(loss, (logp, values))
        return step

    def ours():
        adv, ret = gae(rewards, old_values, bool_mask, GAMMA, LAM, whiten=True)
        loss, _ = ppo_loss(logp, old_logp, adv, bool_mask, values, old_values, ret, clip=CLIP,
                           value_clip=VALUE_CLIP, vf_coef=VF_COEF)
        return torch.autograd.grad(loss, (logp, values))

    # the two pipelines agree before anything is timed
    for a, b in zip(ours(), peer(eager_loss)()):  # gradients are ~1/(B*T): compare relatively
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * b.abs().max().item())

    adv, ret = gae(rewards, old_values, bool_mask, GAMMA, LAM, whiten=True)
    loss_args = (old_logp, adv, mask, values, old_values, ret)
    table = Table(f"gae_ppo_B{B}_T{T}", copy_bandwidth())
    size = f"B={B} T={T} fp32"
    nbytes = 9 * B * T * 4  # the loss reads 7 [B,T] inputs and writes 2 gradients
    _add(table, "gae+ppo fwd+bwd", size, "loop+eager", peer(eager_loss), nbytes,
         "python reverse loop over T + eager loss")
    if on_gpu():
        compiled = torch.compile(eager_loss)
        _add(table, "gae+ppo fwd+bwd", size, "loop+compile(loss)", peer(compiled), nbytes)
        _add(table, "gae+ppo fwd+bwd", size, "compile(loss) only",
             lambda: torch.autograd.grad(compiled(logp, *loss_args), (logp, values)), nbytes,
             "no GAE at all")
    else:
        table.add(op="gae+ppo fwd+bwd", size=size, impl="compile(loss) only", ms=None,
                  note="skipped on CPU (compile time)")
    _add(table, "gae+ppo fwd+bwd", size, "ours", ours, nbytes, "target <= 25 us at B=256 T=2048")
    if on_gpu() and (B, T) == (256, 2048):
        row = table.rows[-1]
        row.extra.update(target_us=25.0, meets_target=row.ms * 1000 <= 25.0)
    _add(table, "gae+ppo fwd+bwd", size, "ours: gae only",
         lambda: gae(rewards, old_values, bool_mask, GAMMA, LAM, whiten=True), None,
         "scan + whitening, 2 launches")
    _add(table, "gae+ppo fwd+bwd", size, "ours: loss only",
         lambda: torch.autograd.grad(
             ppo_loss(logp, old_logp, adv, bool_mask, values, old_values, ret, clip=CLIP,
                      value_clip=VALUE_CLIP, vf_coef=VF_COEF)[0], (logp, values)),
         nbytes, "3 launches: fwd, finalize, bwd")
    table.report(baseline_impl="loop+eager")


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-s"]))
