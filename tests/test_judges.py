"""Judges against float64 references computed from full logits of tiny saved checkpoints."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.judges import (
    Judge,
    JudgeScores,
    LogLikelihoodScorer,
    MixedJudge,
    RerankJudge,
    YoNJudge,
    resolve_token_ids,
)
from rlkd_fast.prompts import judge_prompt

CORPUS = [
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?",
    "def solution():\n    a = 3\n    b = 5\n    result = a + b\n    return result",
    "Proposed solution: Is the above solution correct? Answer with Yes or No. Answer: Yes No",
] * 4

QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples?",
    "A box holds 12 pens. How many pens in 4 boxes?",
    "Sam had 9 cards and gave away 2.",
    "Mia reads 7 pages a day for 6 days and then 3 more pages on the last day of the week.",
    "x",
]
PROGRAMS = [
    "def solution():\n    a = 3\n    b = 5\n    result = a + b\n    return result",
    "def solution():\n    return 48",
    "def solution():\n    cards = 9\n    given = 2\n    left = cards - given\n    result = left\n"
    "    return result",
    "def solution():\n    pages = 7 * 6 + 3\n    return pages",
    "def solution():\n    y = 1\n    z = y * 2\n    w = z - 1\n    return w",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


def _gpt2(tokenizer):
    """GPT-2 learns absolute positions: a padded row scored with the wrong positions shows."""
    torch.manual_seed(2)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2,
                        n_positions=256, pad_token_id=tokenizer.pad_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def judge_dir(request, tokenizer, tmp_path_factory):
    if request.param == "llama":
        model = tiny_causal_lm(tokenizer, hidden_size=32, layers=2, heads=2, seed=1)
    else:
        model = _gpt2(tokenizer)
    with torch.no_grad():  # a larger head spread so that rewards differ visibly between rows
        model.get_output_embeddings().weight.mul_(8.0)
    return save_atomic(model, tokenizer, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def judge(judge_dir):
    return YoNJudge.from_pretrained(judge_dir, device="cpu", tau=0.7, delta=0.0, batch_size=3)


def _ref_last_logits(model, tokenizer, text: str) -> torch.Tensor:
    """[V] float64 next-token logits of one unpadded prompt, full vocabulary."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model.double()(input_ids=ids).logits[0, -1]


def _ref_yon(logits: torch.Tensor, yes, no, tau, delta):
    z_yes, z_no = logits[yes].logsumexp(0), logits[no].logsumexp(0)
    s = torch.sigmoid((z_yes - z_no) / tau)
    mass = logits.softmax(0)[list(yes) + list(no)].sum()
    return (s if s >= delta else torch.zeros_like(s)), mass


def test_token_ids_cover_both_spellings(judge, tokenizer):
    vocab = tokenizer.get_vocab()
    assert sorted(judge.yes_ids) == sorted([vocab["Yes"], vocab["\u0120Yes"]])
    assert sorted(judge.no_ids) == sorted([vocab["No"], vocab["\u0120No"]])
    assert resolve_token_ids(tokenizer, [5, "Yes", 5]) == [5, vocab["Yes"], vocab["\u0120Yes"]]


def test_splitting_tokenizer_fails_clearly():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # Only the byte alphabet: no merges, so "Yes" is three tokens.
    trainer = trainers.BpeTrainer(vocab_size=10, special_tokens=["<pad>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["Yes No"], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")
    assert len(fast.encode("Yes", add_special_tokens=False)) == 3
    with pytest.raises(ValueError, match=r"spells 'Yes' \(it splits it as 3 tokens"):
        resolve_token_ids(fast, ["Yes"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        resolve_token_ids(fast, [10**6])


def test_yes_no_overlap_rejected(judge_dir):
    model_tok = YoNJudge.from_pretrained(judge_dir, device="cpu")
    with pytest.raises(ValueError, match="both a Yes and a No"):
        YoNJudge(model_tok.model, model_tok.tokenizer, yes=("Yes",), no=("No", "Yes"))


def test_yon_reward_matches_full_logits_reference(judge, judge_dir):
    from transformers import AutoModelForCausalLM

    ref_model = AutoModelForCausalLM.from_pretrained(judge_dir, dtype=torch.float64)
    scores = judge.score(QUESTIONS, PROGRAMS)
    assert scores.reward.dtype == torch.float32 and scores.reward.shape == (len(PROGRAMS),)
    for i, (q, p) in enumerate(zip(QUESTIONS, PROGRAMS)):
        logits = _ref_last_logits(ref_model, judge.tokenizer, judge_prompt(q, p))
        reward, mass = _ref_yon(logits, judge.yes_ids, judge.no_ids, tau=0.7, delta=0.0)
        assert scores.reward[i].item() == pytest.approx(reward.item(), abs=2e-5)
        assert scores.extras["mass"][i].item() == pytest.approx(mass.item(), abs=2e-5)
    # The rewards are not all alike, so a row mix-up would show.
    assert scores.reward.max() - scores.reward.min() > 1e-3
    # The threshold zeroes exactly the rows with s < delta.
    delta = scores.reward.median().item()
    thresholded = YoNJudge(judge.model, judge.tokenizer, tau=0.7, delta=delta).score(
        QUESTIONS, PROGRAMS).reward
    keep = scores.reward >= delta
    assert torch.equal(thresholded[~keep], torch.zeros(int((~keep).sum())))
    torch.testing.assert_close(thresholded[keep], scores.reward[keep], atol=1e-6, rtol=0)


def test_left_padding_does_not_change_scores(judge):
    one = YoNJudge(judge.model, judge.tokenizer, tau=0.7, delta=0.0, batch_size=1)
    batched = judge.score(QUESTIONS, PROGRAMS)  # batch_size 3: padded rows in every batch
    alone = one.score(QUESTIONS, PROGRAMS)
    torch.testing.assert_close(batched.reward, alone.reward, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.extras["mass"], alone.extras["mass"], atol=1e-5, rtol=0)


def test_min_lines_and_truncation(judge):
    guarded = YoNJudge(judge.model, judge.tokenizer, tau=0.7, delta=0.0, min_lines=4,
                       max_length=120)
    full = YoNJudge(judge.model, judge.tokenizer, tau=0.7, delta=0.0, max_length=120)
    a, b = guarded.score(QUESTIONS, PROGRAMS), full.score(QUESTIONS, PROGRAMS)
    short = torch.tensor([False, True, False, True, False])
    assert torch.equal(a.extras["short"], short)
    assert torch.equal(a.reward[short], torch.zeros(2))
    torch.testing.assert_close(a.reward[~short], b.reward[~short], atol=1e-6, rtol=0)
    assert b.extras["truncated"].any() and not b.extras["truncated"].all()
    none_judged = guarded.score(QUESTIONS[1:2], PROGRAMS[1:2])  # nothing left to run
    assert none_judged.reward.tolist() == [0.0] and none_judged.extras["short"].all()
    assert guarded.score([], []).reward.shape == (0,)


def test_questions_may_be_problems(judge):
    from rlkd_fast.data import Problem

    problems = [Problem(id=str(i), question=q, answer=None, program=None)
                for i, q in enumerate(QUESTIONS)]
    torch.testing.assert_close(judge.score(problems, PROGRAMS).reward,
                               judge.score(QUESTIONS, PROGRAMS).reward)
    with pytest.raises(ValueError, match="questions but"):
        judge.score(QUESTIONS[:2], PROGRAMS)


def test_log_likelihood_matches_reference(judge, judge_dir):
    from transformers import AutoModelForCausalLM

    ll = LogLikelihoodScorer.from_pretrained(judge_dir, device="cpu", batch_size=2, chunk=7)
    ref_model = AutoModelForCausalLM.from_pretrained(judge_dir, dtype=torch.float64)
    got = ll.score(QUESTIONS, PROGRAMS)
    tok = ll.tokenizer
    for i, (q, p) in enumerate(zip(QUESTIONS, PROGRAMS)):
        ctx = tok(f"Question: {q}\nProposed solution:\n")["input_ids"]
        resp = tok(p, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ctx + resp])
        with torch.no_grad():
            lp = ref_model(input_ids=ids).logits[0].log_softmax(-1)
        want = torch.stack([lp[t - 1, ids[0, t]] for t in range(len(ctx), ids.shape[1])]).mean()
        assert got.reward[i].item() == pytest.approx(want.item(), abs=1e-4)
        assert got.extras["tokens"][i] == len(resp)
    assert ll.score(["q"], [""]).reward[0] == float("-inf")


@pytest.fixture(scope="module")
def reranker_dir(tokenizer, tmp_path_factory):
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         num_labels=2, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(20.0)
    return save_atomic(model, tokenizer, tmp_path_factory.mktemp("rerank"))


def test_rerank_matches_reference(reranker_dir):
    from transformers import AutoModelForSequenceClassification

    judge = RerankJudge.from_pretrained(reranker_dir, device="cpu", batch_size=3)
    ref = AutoModelForSequenceClassification.from_pretrained(reranker_dir, dtype=torch.float64)
    got = judge.score(QUESTIONS, PROGRAMS).reward
    for i, (q, p) in enumerate(zip(QUESTIONS, PROGRAMS)):
        text = f"Question:\n{q}\nAnswer reasoning:\n{p}"
        ids = torch.tensor([judge.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            want = ref(input_ids=ids).logits[0].softmax(-1)[1]
        assert got[i].item() == pytest.approx(want.item(), abs=1e-5)
    assert got.max() - got.min() > 1e-3


def test_rerank_needs_two_labels(tokenizer):
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_labels=3)
    with pytest.raises(ValueError, match="2-label"):
        RerankJudge(LlamaForSequenceClassification(config), tokenizer)


class _Constant(Judge):
    def __init__(self, name: str, value: float):
        self.name, self.value = name, value

    def score(self, questions, programs):
        r = torch.full((len(programs),), self.value)
        return JudgeScores(r, {"seen": torch.arange(len(programs))})


def test_mixed_judge_weights_rewards():
    mixed = MixedJudge([(0.25, _Constant("a", 2.0)), (0.75, _Constant("b", -1.0)),
                        (0.0, _Constant("c", 100.0))])
    out = mixed(["q"] * 3, ["p"] * 3)
    torch.testing.assert_close(out.reward, torch.full((3,), 0.25 * 2.0 - 0.75))
    assert set(out.extras) == {"a/reward", "a/seen", "b/reward", "b/seen"}
    with pytest.raises(ValueError, match="distinct"):
        MixedJudge([(1.0, _Constant("a", 0)), (1.0, _Constant("a", 0))])


def test_chat_template_prompts(judge, judge_dir):
    from transformers import AutoModelForCausalLM

    from rlkd_fast.models import load_tokenizer

    tok = load_tokenizer(judge_dir)
    tok.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<|judge|>{% endif %}")
    chat = YoNJudge(judge.model, tok, tau=0.7, delta=0.0)
    prompts = chat.prompts(QUESTIONS[:2], PROGRAMS[:2])
    assert prompts[0].startswith("<|user|>Question: ") and prompts[0].endswith("<|judge|>")
    assert chat.prompts(QUESTIONS[:1], PROGRAMS[:1])[0] != judge.prompts(QUESTIONS[:1],
                                                                          PROGRAMS[:1])[0]
    ref_model = AutoModelForCausalLM.from_pretrained(judge_dir, dtype=torch.float64)
    got = chat.score(QUESTIONS[:2], PROGRAMS[:2])
    for i, text in enumerate(prompts):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = ref_model(input_ids=ids).logits[0, -1]
        reward, _ = _ref_yon(logits, chat.yes_ids, chat.no_ids, tau=0.7, delta=0.0)
        assert got.reward[i].item() == pytest.approx(reward.item(), abs=2e-5)


def test_soft_capped_head_uses_logits(tokenizer):
    """Gemma-style soft-capping changes the logits after the head: the judge must score from
    the (last-position) logits then, and still match the full-logit reference."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(6)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                          head_dim=16, final_logit_softcapping=2.0,
                          pad_token_id=tokenizer.pad_token_id)
    model = Gemma2ForCausalLM(config).eval()
    judge = YoNJudge(model, tokenizer, tau=0.7, delta=0.0, batch_size=2)
    assert judge._trunk is None
    got = judge.score(QUESTIONS, PROGRAMS)
    ref = Gemma2ForCausalLM(config).double().eval()
    ref.load_state_dict(model.state_dict())
    for i, (q, p) in enumerate(zip(QUESTIONS, PROGRAMS)):
        logits = _ref_last_logits(ref, tokenizer, judge_prompt(q, p))
        assert logits.abs().max() <= 2.0  # the cap is applied
        reward, mass = _ref_yon(logits, judge.yes_ids, judge.no_ids, tau=0.7, delta=0.0)
        assert got.reward[i].item() == pytest.approx(reward.item(), abs=2e-5)
        assert got.extras["mass"][i].item() == pytest.approx(mass.item(), abs=2e-5)
