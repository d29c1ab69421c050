"""Real-shaped random models for the GPU check's trainer run, built offline and saved locally.

Student: a Galactica-125M-shaped OPT (hidden 768, 12 layers, 12 heads, FFN 3072, 2048
positions, vocabulary 50000, pre-norm, GELU). Judge: a small Qwen3 with Qwen3-8B's vocabulary
(151936 rows, so the fused YoN kernel reads a real-sized head), 4 layers of width 1024. Both
carry the demo's byte-level tokenizer (a few hundred tokens, digits split; the model rows past
it are padding, as Qwen's are). Weights are random: the run measures speed and that every part
runs on CUDA, not learning.

    python benchmarks/gpu_models.py OUT_DIR [--small]   # --small: tiny shapes, for a CPU check
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM, Qwen3Config, Qwen3ForCausalLM

from rlkd_fast.data import load_split
from rlkd_fast.demo.tiny import train_tokenizer
from rlkd_fast.prompts import judge_prompt, program_body, program_header


def tokenizer():
    problems = load_split("synthetic:2", split="train", size=500, seed=7)
    texts = [program_header(p.question) + program_body(p.program) for p in problems]
    texts += [judge_prompt(p.question, p.program) + " Yes" for p in problems[:100]]
    return train_tokenizer(texts)


def student(tok, small: bool) -> OPTForCausalLM:
    width, layers, heads = (64, 2, 2) if small else (768, 12, 12)
    return OPTForCausalLM(OPTConfig(
        vocab_size=max(len(tok), 512 if small else 50000), hidden_size=width,
        ffn_dim=4 * width, num_hidden_layers=layers, num_attention_heads=heads,
        max_position_embeddings=2048, word_embed_proj_dim=width, do_layer_norm_before=True,
        activation_function="gelu", dropout=0.1, attention_dropout=0.1,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id))


def judge(tok, small: bool) -> Qwen3ForCausalLM:
    width, layers, heads, kv = (64, 2, 4, 2) if small else (1024, 4, 16, 8)
    return Qwen3ForCausalLM(Qwen3Config(
        vocab_size=max(len(tok), 512 if small else 151936), hidden_size=width,
        intermediate_size=3 * width, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv, head_dim=64 if not small else 16,
        max_position_embeddings=4096, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--small", action="store_true", help="tiny shapes (a CPU check)")
    args = parser.parse_args()
    tok = tokenizer()
    torch.manual_seed(0)
    for name, build in (("student", student), ("judge", judge)):
        model = build(tok, args.small)
        model.save_pretrained(args.out / name)
        tok.save_pretrained(args.out / name)
        n = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name}: {type(model).__name__} {n:.0f}M parameters -> {args.out / name}")


if __name__ == "__main__":
    main()
