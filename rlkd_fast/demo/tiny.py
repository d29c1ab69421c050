"""Tiny tokenizers and models built locally, for the offline default run and the tests.

Real users pass hub ids or local directories of real checkpoints; these builders exist so that
everything (SFT, RL, judges, evaluation) can run end to end on a CPU without any download.
They are saved and loaded through the real ``save_pretrained`` / ``from_pretrained`` path like
any checkpoint (``rlkd_fast.checkpoint.save_atomic``).
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>",
                  "unk_token": "<unk>"}
# Words the judge answers with must each be one token, with and without a leading space.
JUDGE_WORDS = ("Yes", "No", " Yes", " No")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` that splits every digit on its own, so a
    tiny model copies numbers it has never seen digit by digit instead of memorising them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts) + [w * 8 for w in JUDGE_WORDS], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    missing = [w for w in JUDGE_WORDS if w not in fast.get_vocab() and
               w.replace(" ", "\u0120") not in fast.get_vocab()]
    if missing:
        fast.add_tokens(missing)
    return fast


def tiny_causal_lm(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A small Llama-architecture causal LM sized to ``tokenizer``'s vocabulary."""
    import torch

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)
