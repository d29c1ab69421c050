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


# The judge's words: runs of letters, digits and underscores, newlines, and runs of punctuation;
# spaces and tabs only separate them.
_WORD_SPLIT = r"\w+|\n|[^\w\s]+"


def train_word_tokenizer(texts: Iterable[str], max_number: int = 1000,
                         min_count: int = 2) -> PreTrainedTokenizerFast:
    """A word-level tokenizer for the tiny judge: every whole number up to ``max_number`` and
    every word seen ``min_count`` times in ``texts`` is one token (others are ``<unk>``).

    A judge that checks a program against its question mostly asks "does this number or name
    appear there?"; with one token per number and per identifier that is a single attention
    match, which a tiny model learns from far fewer examples than digit-by-digit matching."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    split = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[ \t]+"), "removed"),
        pre_tokenizers.Split(Regex(_WORD_SPLIT), "isolated"),
    ])
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in split.pre_tokenize_str(text):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(w for w, c in counts.items() if c >= min_count and not w.isdigit())
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS.values(), *map(str, range(max_number + 1)),
                                *words, *(w.strip() for w in JUDGE_WORDS)]))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)},
                                     unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = split
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


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
