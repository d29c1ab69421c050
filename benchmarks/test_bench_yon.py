"""YoN judge reward: ours vs the eager and compiled PyTorch ways of scoring a judge's Yes/No.

GPU sizes are the anchors' (B=64 rows, Qwen-sized V=151936, H=4096, bf16); on CPU a tiny smoke
size runs under the Triton interpreter so the file keeps working, and its timings mean nothing.
Each row reports the median time, the fraction of copy bandwidth for the bytes one fused pass
must move, peak memory and, on a GPU, the number of device launches (kernels, copies, memsets).
"""

import importlib

import pytest
import torch

from benchmarks._harness import Table, bench, copy_bandwidth, device, on_gpu, peak_memory_mb
from rlkd_fast.kernels.yon_reward import yon_reward, yon_reward_from_hidden

yon_module = importlib.import_module("rlkd_fast.kernels.yon_reward")  # not the same-named function

ROWS, VOCAB, WIDTH = (64, 151936, 4096) if on_gpu() else (2, 1000, 32)
YES, NO = 454, 753  # one id per side, as in the anchors; any ids in range will do
TAU, DELTA = 1.0, 0.5


def _score(z_yes, z_no):
    s = torch.sigmoid((z_yes.float() - z_no.float()) / TAU)
    return torch.where(s >= DELTA, s, 0.0)


def eager_gather(logits):
    """The usual judge code: gather the two logits, sigmoid, threshold (no mass)."""
    return _score(logits[:, YES], logits[:, NO])


def eager_mass(logits):
    """The same plus p(Yes)+p(No) from a full fp32 softmax."""
    p = torch.softmax(logits.float(), -1)
    return _score(logits[:, YES], logits[:, NO]), p[:, YES] + p[:, NO]


def full_head(hidden, weight):
    """Full-vocab lm_head matmul, then YoN on the logits."""
    return eager_gather(hidden @ weight.T)


def two_row_head(hidden, weight):
    """Only the two head rows: index_select + a [B,H] x [H,2] matmul, then YoN."""
    z = hidden @ weight.index_select(0, torch.tensor([YES, NO], device=weight.device)).T
    return _score(z[:, 0], z[:, 1])


def launches(fn) -> int | None:
    """Device activities (kernels, copies, memsets) of one warm ``fn()``; None off-GPU."""
    if not on_gpu():
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA)


def _add(table, op, size, impl, fn, nbytes=None, note=""):
    n = launches(fn)
    table.add(op=op, size=size, impl=impl, ms=bench(fn), bytes_moved=nbytes,
              peak_mb=peak_memory_mb(fn), note=(f"{n} launches " if n is not None else "") + note,
              extra={"launches": n})
    return n


def test_bench_yon_from_logits():
    rows, vocab = ROWS, VOCAB
    dtype = torch.bfloat16 if on_gpu() else torch.float32
    logits = (torch.randn(rows, vocab, device=device()) * 3).to(dtype)
    reward, mass = yon_reward(logits, YES, NO, TAU, DELTA)
    ref_reward, ref_mass = eager_mass(logits)
    torch.testing.assert_close(reward, ref_reward, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mass, ref_mass, atol=1e-7, rtol=1e-4)

    table = Table("yon_reward", copy_bandwidth())
    size = f"B={rows} V={vocab} {str(dtype)[6:]}"
    nbytes = logits.numel() * logits.element_size()  # one read of the logits
    _add(table, "yon_logits", size, "eager gather+sigmoid", lambda: eager_gather(logits),
         note="no mass")
    _add(table, "yon_logits", size, "eager+softmax mass", lambda: eager_mass(logits), nbytes)
    if on_gpu():
        compiled = torch.compile(eager_mass)
        _add(table, "yon_logits", size, "compile(eager+mass)", lambda: compiled(logits), nbytes)
    else:
        table.add(op="yon_logits", size=size, impl="compile(eager+mass)", ms=None,
                  note="skipped on CPU (compile time)")
    _add(table, "yon_logits", size, "ours, no mass",
         lambda: yon_reward(logits, YES, NO, TAU, DELTA, with_mass=False))
    n = _add(table, "yon_logits", size, "ours (with mass)",
             lambda: yon_reward(logits, YES, NO, TAU, DELTA), nbytes, note="target <= 10 us")
    if on_gpu():
        _sweep_plan(table, size, logits, nbytes)
    table.report(baseline_impl="eager+softmax mass")
    if n is not None:  # the design's point: the whole row reduction is one launch
        assert n <= 1, f"yon_reward took {n} device launches"


def _sweep_plan(table, size, logits, nbytes):
    """Time other tile widths / grid sizes than the defaults, to tune them on the GPU at hand."""
    defaults = yon_module._MAX_BLOCK, yon_module._TARGET_PROGRAMS
    try:
        for block in (2048, 4096, 8192):
            for target in (512, 1024, 2048, 4096):
                if (block, target) == defaults:
                    continue
                yon_module._MAX_BLOCK, yon_module._TARGET_PROGRAMS = block, target
                plan = yon_module._plan(*logits.shape)
                table.add(op="yon_logits", size=size, impl=f"ours b={block} t={target}",
                          ms=bench(lambda: yon_reward(logits, YES, NO, TAU, DELTA)),
                          bytes_moved=nbytes, note=f"(block, tiles/prog, splits)={plan}")
    finally:
        yon_module._MAX_BLOCK, yon_module._TARGET_PROGRAMS = defaults


def test_bench_yon_from_hidden():
    rows, vocab, width = ROWS, VOCAB, WIDTH
    dtype = torch.bfloat16 if on_gpu() else torch.float32
    hidden = torch.randn(rows, width, device=device()).to(dtype)
    weight = (torch.randn(vocab, width, device=device()) / width**0.5 * 3).to(dtype)
    reward, _ = yon_reward_from_hidden(hidden, weight, YES, NO, TAU, DELTA)
    torch.testing.assert_close(reward, two_row_head(hidden.float(), weight.float()),
                               atol=2e-3, rtol=1e-2)  # ours sums bf16 products in fp32

    table = Table("yon_reward_from_hidden", copy_bandwidth())
    size = f"B={rows} H={width} V={vocab}"
    esize = hidden.element_size()
    rows_bytes = (rows + 2) * width * esize  # hidden + the two head rows
    head_bytes = vocab * width * esize  # the whole head, once
    _add(table, "yon_hidden", size, "full lm_head+YoN", lambda: full_head(hidden, weight),
         head_bytes)
    _add(table, "yon_hidden", size, "eager 2-row head", lambda: two_row_head(hidden, weight),
         rows_bytes)
    _add(table, "yon_hidden", size, "ours (rows only)",
         lambda: yon_reward_from_hidden(hidden, weight, YES, NO, TAU, DELTA), rows_bytes,
         note="target <= 10 us")
    _add(table, "yon_hidden", size, "ours + exact mass",
         lambda: yon_reward_from_hidden(hidden, weight, YES, NO, TAU, DELTA, with_mass=True),
         head_bytes, note="fused GEMM + online lse")
    _add(table, "yon_hidden", size, "torch backend + mass",
         lambda: yon_reward_from_hidden(hidden, weight, YES, NO, TAU, DELTA, with_mass=True,
                                        backend="torch"),
         head_bytes, note="chunked matmuls")
    table.report(baseline_impl="eager 2-row head")


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-s"]))
