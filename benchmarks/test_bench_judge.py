"""Judge prefill: today's padded batches vs token-budget batches vs shared group prefixes.

A GRPO rollout asks the YoN judge about K programs per question. Today's path pads every
batch of ``batch_size`` prompts to its longest and prefills each prompt whole, so the template
and the question are computed K times. The new path batches by a token budget and prefills
each group's common prefix once (``YoNJudge(share_prefix=True)``).

GPU size (the issue's): a Qwen3-8B-shaped judge with random weights (36 layers, hidden 4096,
32 heads, 8 KV heads, intermediate 12288, vocab 151936), bf16; 64 programs = 8 questions x 8,
template + question ~200 tokens, programs 150-700 tokens. On CPU a tiny Qwen3 and 16 programs
run as a smoke test: their timings say little about a GPU. ``RLKD_JUDGE_BENCH=full`` runs the
issue's batch on the CPU with a small Qwen3 (4 layers of 256), where the tokens dominate.
A word-level tokenizer (one token per word) makes the prompt lengths exact. Variants are timed
alternately in one run; the table gives medians, the tokens each variant forwards, and how far
its rewards are from today's.
"""

import os
import random
import time

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from benchmarks._harness import Table, device, on_gpu, peak_memory_mb
from rlkd_fast.judges import YoNJudge

GPU = on_gpu()
FULL = GPU or os.environ.get("RLKD_JUDGE_BENCH") == "full"  # the batch shape
GROUPS, K = (8, 8) if FULL else (2, 8)
QUESTION_WORDS = 180 if FULL else 40  # + the template's ~20: the shared prefix
PROGRAM_TOKENS = (150, 700) if FULL else (10, 80)
ROUNDS = 5 if GPU else 3
WORDS = 2000


def judge_model() -> torch.nn.Module:
    if GPU:
        config = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                             num_hidden_layers=36, num_attention_heads=32,
                             num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
                             tie_word_embeddings=False)
        dtype = torch.bfloat16
    else:
        width, layers = (256, 4) if FULL else (64, 2)
        config = Qwen3Config(vocab_size=WORDS + 8, hidden_size=width, intermediate_size=3 * width,
                             num_hidden_layers=layers, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=width // 4,
                             max_position_embeddings=1024)
        dtype = torch.float32
    before = torch.get_default_dtype()
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # built in its dtype on its device: no fp32 copy of 8B
    try:
        with torch.device(device()):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def word_tokenizer() -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word (unknown words are one [UNK] token)."""
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "Yes", "No"])}
    vocab.update({f"w{i}": len(vocab) + i for i in range(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def grpo_batch(seed: int = 0) -> tuple[list[str], list[str]]:
    """GROUPS questions x K programs, consecutive per question, as a rollout orders them."""
    rng = random.Random(seed)
    words = lambda n: " ".join(f"w{rng.randrange(WORDS)}" for _ in range(n))
    questions, programs = [], []
    for _ in range(GROUPS):
        question = words(QUESTION_WORDS)
        for _ in range(K):
            questions.append(question)
            # "def solution():" is two words: the header the K programs share.
            programs.append("def solution():\n" + words(rng.randint(*PROGRAM_TOKENS) - 2))
    return questions, programs


# batch_size 32: the trainer's judge_batch_size. Three budgets: a smaller one pads less, a larger
# one runs fewer, larger forwards (4k is the default).
VARIANTS = {
    "padded batches (today)": dict(batch_size=32, max_batch_tokens=None, share_prefix=False),
    "budget 4k": dict(batch_size=32, max_batch_tokens=4096, share_prefix=False),
    "budget 8k + shared": dict(batch_size=32, max_batch_tokens=8192, share_prefix=True),
    "budget 4k + shared": dict(batch_size=32, max_batch_tokens=4096, share_prefix=True),
    "budget 2k + shared": dict(batch_size=32, max_batch_tokens=2048, share_prefix=True),
}
BASELINE = "padded batches (today)"
SHARED = [name for name, kw in VARIANTS.items() if kw["share_prefix"]]


def forwarded_tokens(judge: YoNJudge, questions, programs) -> tuple[int, int]:
    """(real, padded) new tokens the judge's trunk is fed to score the batch once."""
    counts = [0, 0]

    def hook(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        counts[0] += int(mask[:, -ids.shape[1]:].sum())
        counts[1] += ids.numel()

    handle = judge._trunk.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        judge.score(questions, programs)
    finally:
        handle.remove()
    return counts[0], counts[1]


def timed(fn) -> float:
    """Milliseconds of one ``fn()``, the device synchronized on both sides."""
    if GPU:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if GPU:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


def test_bench_judge_prefill():
    model, tok = judge_model(), word_tokenizer()
    questions, programs = grpo_batch()
    judges = {name: YoNJudge(model, tok, delta=0.0, **kw) for name, kw in VARIANTS.items()}
    assert all(judges[name].share_prefix for name in SHARED)  # Qwen3: full attention only
    rewards = {name: j.score(questions, programs).reward for name, j in judges.items()}  # warm
    times: dict[str, list[float]] = {name: [] for name in judges}
    for _ in range(ROUNDS):  # alternating, so load drift hits every variant alike
        for name, judge in judges.items():
            times[name].append(timed(lambda judge=judge: judge.score(questions, programs)))

    lengths = [len(tok(p)["input_ids"]) for p in judges[BASELINE].prompts(questions, programs)]
    size = (f"B={len(programs)} ({GROUPS}x{K}) L={min(lengths)}-{max(lengths)}"
            f" {'bf16' if GPU else 'fp32'}")
    table = Table("judge_prefill")
    tolerance = 2e-2 if GPU else 1e-5  # bf16 rounding on the GPU; fp32 on the CPU
    for name, judge in judges.items():
        real, padded = forwarded_tokens(judge, questions, programs)
        diff = (rewards[name] - rewards[BASELINE]).abs().max().item()
        ms = sorted(times[name])[len(times[name]) // 2]
        note = f"tokens {real:,} real / {padded:,} padded; rewards within {diff:.1e} of today's"
        if name in SHARED:
            note += "; target >= 1.5x today (GPU, Qwen3-8B shape)"
        table.add(op="judge_prefill", size=size, impl=name, ms=ms,
                  peak_mb=peak_memory_mb(lambda judge=judge: judge.score(questions, programs)),
                  note=note, extra={"real_tokens": real, "padded_tokens": padded,
                                    "max_reward_diff": diff, "times_ms": times[name]})
    for row in table.rows:
        row.extra["speedup_vs_today"] = table.ratio(row, BASELINE)
    table.report(baseline_impl=BASELINE)  # before the checks: a failed run keeps its table
    for row in table.rows:
        diff = row.extra["max_reward_diff"]
        assert diff <= tolerance, f"{row.impl}: rewards {diff:.2e} from today's"
    # Each group's prefix is forwarded once: fewer tokens than today's path.
    today = table.rows[0].extra["real_tokens"]
    assert all(r.extra["real_tokens"] < today for r in table.rows if r.impl in SHARED)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q", "-s"]))
