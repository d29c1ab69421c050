"""One very long question: every place that tokenizes prompts (generation, SFT, the judges) does
work bounded by its token limit, and keeps exactly the tokens the whole text's cut would."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

from rlkd_fast.data import Problem
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.judges import LogLikelihoodScorer, RerankJudge, YoNJudge
from rlkd_fast.rollout import encode_bounded, generate
from rlkd_fast.sft import sft_batch

WORDS = ["Tom", "has", "3", "apples", "and", "buys", "15", "more.", "How", "many", "?", "def",
         "solution():", "\n", "    ", "result", "=", "a", "+", "b", "return", "Yes", "No",
         "caf\u00e9", "12,500", "\n\n", "x*y"]
CORPUS = [" ".join(random.Random(i).choices(WORDS, k=40)) for i in range(60)]


def text_of(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(WORDS) + rng.choice([" ", " ", "  ", "\n", ""])
                   for _ in range(n_words))


def bpe():
    return train_tokenizer(CORPUS, vocab_size=320)


def unigram():
    """SentencePiece-style (Metaspace, a BOS added by the post-processor)."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
        vocab_size=200, special_tokens=special, unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("make", [bpe, unigram])
def test_bounded_encoding_keeps_what_the_whole_texts_cut_keeps(make):
    tok = make()
    for seed, n_words in enumerate([0, 3, 40, 300, 2000, 9000] * 4):
        text = text_of(n_words, seed)
        for special in (False, True):
            whole = tok(text, add_special_tokens=special)["input_ids"]
            for limit in (1, 7, 64, 300):
                for keep in ("last", "first"):
                    (ids,), (cut,) = encode_bounded(tok, [text], limit, keep, special)
                    want = whole[-limit:] if keep == "last" else whole[:limit]
                    assert ids == want, (make.__name__, n_words, special, limit, keep)
                    assert cut == (len(whole) > limit)
    batch, cut = encode_bounded(tok, ["a b", text_of(5000, 9), ""], 16, "last")
    assert [len(r) for r in batch][1] == 16 and cut[1] and not cut[0]
    assert encode_bounded(tok, [], 5) == ([], [])


class CountingTokenizer:
    """A tokenizer that counts the characters it is asked to tokenize."""

    def __init__(self, tokenizer):
        self._tok, self.chars = tokenizer, 0

    def __call__(self, text, *args, **kwargs):
        self.chars += len(text) if isinstance(text, str) else sum(map(len, text))
        return self._tok(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __len__(self):
        return len(self._tok)


HUGE = "Tom has 3 apples. " * 1_200_000  # 21.6 MB
LIMIT = 10_000  # characters: the bound's work, a few thousand times less than the question


@pytest.fixture(scope="module")
def tok():
    return bpe()


@pytest.fixture(scope="module")
def lm(tok):
    return tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2, seed=0).eval()


def test_generation_tokenizes_only_the_kept_end_of_a_huge_prompt(tok, lm):
    counting = CountingTokenizer(tok)
    roll = generate(lm, counting, [HUGE + "How many?", "How many?"], max_new_tokens=2,
                    max_prompt_length=48)
    assert counting.chars < LIMIT
    assert roll.prompt_mask.sum(1).tolist()[0] == 48
    tail = tok("Tom has 3 apples. " * 40 + "How many?")["input_ids"][-48:]
    assert roll.prompt_ids[0].tolist() == tail


def test_sft_batch_tokenizes_only_what_it_keeps(tok):
    counting = CountingTokenizer(tok)
    program = "def solution():\n    a = 3\n    return a"
    _, labels, mask = sft_batch(counting, [Problem("p", HUGE, 3.0, program)],
                                  lambda q: f"Question:\n{q}\n", max_prompt_tokens=32,
                                  max_new_tokens=8)
    assert counting.chars < LIMIT
    assert int((labels == -100).sum()) == 32 and int(mask.sum()) <= 32 + 8


def test_judges_tokenize_only_what_they_keep(tok, lm):
    programs = ["def solution():\n    a = 3\n    return a"]
    yon = YoNJudge(lm, CountingTokenizer(tok), max_length=64, delta=0.0)
    scores = yon.score([HUGE], programs)
    assert yon.tokenizer.chars < LIMIT and bool(scores.extras["truncated"][0])
    ll = LogLikelihoodScorer(lm, CountingTokenizer(tok), max_length=64)
    assert torch.isinf(ll.score([HUGE], programs).reward).all()  # the question fills the window
    assert ll.tokenizer.chars < LIMIT
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_labels=2,
                         pad_token_id=tok.pad_token_id)
    reranker = RerankJudge(LlamaForSequenceClassification(config).eval(), CountingTokenizer(tok),
                           max_length=64)
    assert reranker.score([HUGE], programs).reward.shape == (1,)
    assert reranker.tokenizer.chars < LIMIT
