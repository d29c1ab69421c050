"""Decode step time: HF ``generate`` vs the static-cache loop (``rlkd_fast.decode``).

GPU size is the anchors' (issue 13): Galactica-125M shape (OPT, 12 layers, hidden 768, vocab
50000, random weights), B=24 rows, bf16, 128 prompt tokens, 256 new tokens; target <= 1 ms per
decode step with the CUDA graph (HF ``generate`` measured 6.0-6.8 ms on an H200). On CPU a tiny
smoke size runs, and its timings mean nothing for the GPU.

A decode step's time is (time for N new tokens - time for 1 new token) / (N - 1): the prefill
and the set-up are paid once in both and cancel. No row stops early (the EOS id is one the
model never emits), so every call runs N steps.

Entry point for other scripts: :func:`run` (returns the table), or
``pytest benchmarks/test_bench_decode.py -s``.
"""

from __future__ import annotations

import torch

from benchmarks._harness import Table, bench, device, on_gpu
from rlkd_fast.decode import decode

if on_gpu():
    LAYERS, HIDDEN, VOCAB, ROWS, PROMPT, NEW, DTYPE = 12, 768, 50000, 24, 128, 256, torch.bfloat16
else:
    LAYERS, HIDDEN, VOCAB, ROWS, PROMPT, NEW, DTYPE = 2, 64, 1000, 4, 16, 16, torch.float32
TARGET_MS = 1.0  # on CUDA with the graph


def galactica_shaped(layers: int = LAYERS, hidden: int = HIDDEN, vocab: int = VOCAB,
                     dtype: torch.dtype = DTYPE):
    """A random OPT model shaped like Galactica-125M (pre-norm, GELU, no dropout), eval mode."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=vocab, hidden_size=hidden, ffn_dim=4 * hidden,
                       num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                       max_position_embeddings=2048, word_embed_proj_dim=hidden,
                       do_layer_norm_before=True, activation_function="gelu", dropout=0.0,
                       attention_dropout=0.0, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    return OPTForCausalLM(config).to(device(), dtype).eval()


def _prompts(rows: int, width: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of lengths width/2..width (ids 3.. avoid the specials)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (rows, width), generator=gen)
    mask = torch.ones(rows, width, dtype=torch.long)
    for r in range(rows):
        mask[r, :r * (width // 2) // max(1, rows - 1)] = 0
    return ids.masked_fill(mask == 0, 1).to(device()), mask.to(device())


def run(rows: int = ROWS, prompt: int = PROMPT, new: int = NEW) -> Table:
    """Time HF generate (dynamic and static cache) and the static loop (eager, and with the CUDA
    graph on CUDA) per decode step; prints the table and writes benchmarks/results/decode.json."""
    model = galactica_shaped()
    ids, mask = _prompts(rows, prompt, model.config.vocab_size)
    never = [model.config.vocab_size + 7]  # an EOS id no row emits: every call runs `new` steps
    kw = dict(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=1,
              eos_token_id=never)

    def hf(n: int, **extra):
        return lambda: model.generate(max_new_tokens=n, **kw, **extra)

    def ours(n: int, graph: bool):
        return lambda: decode(model, ids, mask, n, never, 1, cuda_graph=graph)

    impls = {"hf generate": hf, "hf generate static": lambda n: hf(
        n, cache_implementation="static"), "static loop": lambda n: ours(n, False)}
    if on_gpu():
        impls["static loop + cuda graph"] = lambda n: ours(n, True)
    table = Table("decode", gpu_benchmark=True)
    size = f"B={rows} P={prompt} T={new} {str(DTYPE).split('.')[-1]}"
    with torch.no_grad():
        for name, make in impls.items():
            try:
                full, one = bench(make(new), rep_ms=1000), bench(make(1), rep_ms=300)
            except Exception as err:  # one failing engine must not hide the others' rows
                table.add(op="decode step", size=size, impl=name, ms=None,
                          note=f"FAILED: {type(err).__name__}: {str(err)[:120]}")
                continue
            step = (full - one) / (new - 1)
            note = f"whole call {full:.1f} ms"
            if name.endswith("cuda graph"):
                verdict = "met" if step <= TARGET_MS else "MISSED"
                note += f"; target <= {TARGET_MS} ms/step: {verdict}"
            table.add(op="decode step", size=size, impl=name, ms=step, note=note)
        if not on_gpu():  # fp32 on CPU: the loop's greedy tokens are HF's
            want = hf(new)()[:, ids.shape[1]:]
            assert torch.equal(ours(new, False)().tokens, want)
    table.report("hf generate")
    return table


def test_decode_step_time():
    table = run()
    failed = [f"{r.impl}: {r.note}" for r in table.rows if r.ms is None]
    assert not failed, failed
    assert all(r.ms > 0 for r in table.rows)
