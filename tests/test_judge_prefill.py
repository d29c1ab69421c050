"""Judge prefill that pays for each token once: token-budget batches and shared group prefixes.

A GRPO rollout hands the judge K programs per question in a row. The YoN judge prefills the
group's common token prefix once and scores each continuation against its cached keys and
values; these tests hold that path to the unshared one (each prompt alone, within 1e-5) and to
a float64 forward of each whole prompt, on tiny models of the real architectures
(``system/arch_zoo.py``): chat judges, absolute and rotary positions, OPT's positions from the
mask, heads whose logits the fused kernel cannot produce.
"""

from __future__ import annotations

import pytest
import torch
from system.arch_zoo import Zoo

from rlkd_fast.judges import MIN_SHARED_PREFIX, YoNJudge, _batches, _prefix_groups
from rlkd_fast.models import load_causal_lm

QUESTIONS = ["Tom has 3 apples and buys 5 more. How many apples does he have now?",
             "A box holds 12 pens. How many pens are in 4 boxes?",
             "Sam had 9 cards and gave 2 away."]
BODIES = ["    a = 3\n    b = 5\n    return a + b",
          "    return 48",
          "    cards = 9\n    given = 2\n    left = cards - given\n    result = left\n"
          "    return result",
          "    return 48"]  # the same program twice: the prompts are equal, one token is kept


def grpo_batch() -> tuple[list[str], list[str]]:
    """Three groups of four programs (consecutive, as a rollout orders them), a group of two
    equal programs (its prompts are equal: each keeps one token of its own) and a question with
    a single program."""
    questions, programs = [], []
    for q in QUESTIONS:
        for body in BODIES:
            questions.append(q)
            programs.append("def solution():\n" + body)
    questions += ["Ann has 4 hats and 2 caps.", "Ann has 4 hats and 2 caps.", "Mia reads 7 pages."]
    programs += ["def solution():\n    return 6"] * 2 + ["def solution():\n    return 7"]
    return questions, programs


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def load_judge_model(zoo: Zoo, name: str):
    model, tok = load_causal_lm(zoo.path(name), device="cpu")
    with torch.no_grad():  # a wider head spread: rewards then differ visibly between rows
        model.get_output_embeddings().weight.mul_(8.0)
    return model, tok


def reference_rewards(judge: YoNJudge, questions, programs) -> torch.Tensor:
    """Each whole prompt alone through a float64 copy of the model, full logits, Eq. 2."""
    model = judge.model.double()
    try:
        ids, _ = judge._encode(judge.prompts(questions, programs))
        out = []
        with torch.no_grad():
            for row in ids:
                logits = model(input_ids=torch.tensor([row])).logits[0, -1]
                z_yes = logits[judge.yes_ids].logsumexp(0)
                z_no = logits[judge.no_ids].logsumexp(0)
                out.append(torch.sigmoid((z_yes - z_no) / judge.tau))
        return torch.stack(out)
    finally:
        model.float()


class TokenCounter:
    """Counts the real (unmasked) new tokens and the padded shape of every forward of a
    module (the trunk, or the model where the head is not fused)."""

    def __init__(self, module):
        self.real, self.shapes = 0, []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs["attention_mask"]
        self.shapes.append(tuple(ids.shape))
        self.real += int(mask[:, -ids.shape[1]:].sum())

    def close(self):
        self.handle.remove()


# Chat judges (Qwen3 with thinking off, Llama-3.1 with its BOS), SentencePiece (Phi-3), OPT
# (positions derived from the mask), GPT-2 (learned absolute positions), Cohere (a scaled head:
# the logits path). Gemma-3 and Gemma-2 have sliding-window layers and are scored unshared.
SHARED = ["qwen3_judge", "llama31_judge", "phi3_judge", "opt", "gpt2", "cohere"]


@pytest.mark.parametrize("name", SHARED + ["gemma3_judge", "gemma2"])
def test_shared_prefix_rewards_equal_the_unshared_path(zoo, name):
    model, tok = load_judge_model(zoo, name)
    questions, programs = grpo_batch()
    # A small budget: several prefill waves and continuation batches that mix the groups.
    shared = YoNJudge(model, tok, delta=0.0, batch_size=5, max_batch_tokens=160)
    alone = YoNJudge(model, tok, delta=0.0, batch_size=1, max_batch_tokens=None,
                     share_prefix=False)
    assert shared.share_prefix == (name in SHARED)
    got, want = shared.score(questions, programs), alone.score(questions, programs)
    torch.testing.assert_close(got.reward, want.reward, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.extras["mass"], want.extras["mass"], atol=1e-5, rtol=0)
    ref = reference_rewards(shared, questions, programs)
    torch.testing.assert_close(got.reward.double(), ref, atol=2e-5, rtol=0)
    assert got.reward.max() - got.reward.min() > 1e-3  # a row mix-up would show
    assert abs(got.reward[1] - got.reward[3]) <= 1e-6  # the same prompt twice


@pytest.mark.parametrize("name", ["qwen3_judge", "cohere"])
def test_each_group_prefix_is_prefilled_once(zoo, name):
    model, tok = load_judge_model(zoo, name)
    questions, programs = grpo_batch()
    judge = YoNJudge(model, tok, delta=0.0, batch_size=64, max_batch_tokens=None)
    ids, _ = judge._encode(judge.prompts(questions, programs))
    groups, alone = _prefix_groups(questions, ids)
    assert [g.rows for g in groups] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13]]
    assert alone == [14]
    for g in groups:  # the longest common prefix, each row keeping one token of its own
        rows = [ids[j] for j in g.rows]
        assert g.prefix >= MIN_SHARED_PREFIX
        assert all(r[:g.prefix] == rows[0][:g.prefix] and len(r) > g.prefix for r in rows)
        longer = {tuple(r[:g.prefix + 1]) for r in rows}
        assert len(longer) > 1 or g.prefix == len(rows[0]) - 1
    assert ids[12] == ids[13] and groups[3].prefix == len(ids[12]) - 1
    counter = TokenCounter(judge._trunk if judge._trunk is not None else judge.model)
    try:
        judge.score(questions, programs)
    finally:
        counter.close()
    every_token = sum(len(r) for r in ids)
    once = every_token - sum((len(g.rows) - 1) * g.prefix for g in groups)
    assert counter.real == once < 0.7 * every_token


def test_batches_respect_the_token_budget():
    lengths = [5, 40, 12, 33, 7, 90, 12, 1, 64, 20]
    batches = list(_batches(lengths, batch_size=4, max_tokens=100))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    for b in batches:
        assert len(b) <= 4
        assert len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1
    # Short rows fill a batch up to the budget instead of a fixed row count.
    assert [[lengths[i] for i in b] for b in batches] == [[90], [64], [40, 33], [20, 12, 12, 7],
                                                          [5, 1]]
    assert [len(b) for b in _batches(lengths, batch_size=4)] == [4, 4, 2]
    assert list(_batches([300, 2], batch_size=8, max_tokens=100)) == [[0], [1]]


def test_judge_forwards_stay_within_the_budget(zoo):
    model, tok = load_judge_model(zoo, "llama31_judge")
    questions, programs = grpo_batch()
    for share in (True, False):
        judge = YoNJudge(model, tok, delta=0.0, batch_size=64, max_batch_tokens=120,
                         share_prefix=share)
        counter = TokenCounter(judge._trunk)
        try:
            judge.score(questions, programs)
        finally:
            counter.close()
        assert len(counter.shapes) > 2
        assert all(b * length <= 120 or b == 1 for b, length in counter.shapes)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_batch_tokens=0), "max_batch_tokens must be >= 1 or None, got 0"),
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
])
def test_bad_budgets_fail_clearly(zoo, kwargs, match):
    model, tok = load_causal_lm(zoo.path("qwen3_judge"), device="cpu")
    with pytest.raises(ValueError, match=match):
        YoNJudge(model, tok, **kwargs)


def test_reranker_and_log_likelihood_batch_by_tokens(zoo):
    """Same scores as one row at a time; no forward over the budget (bar a lone long row)."""
    from rlkd_fast.judges import LogLikelihoodScorer, RerankJudge
    from rlkd_fast.models import load_sequence_classifier

    questions, programs = grpo_batch()
    model, tok = load_sequence_classifier(zoo.path("opt_reranker"), device="cpu")
    lm, lm_tok = load_judge_model(zoo, "llama31_judge")
    cases = [(lambda **kw: RerankJudge(model, tok, **kw), model.model),
             (lambda **kw: LogLikelihoodScorer(lm, lm_tok, **kw), lm.model)]
    for make, trunk in cases:
        want = make(batch_size=1, max_batch_tokens=None).score(questions, programs).reward
        counter = TokenCounter(trunk)
        try:
            got = make(batch_size=64, max_batch_tokens=100).score(questions, programs).reward
        finally:
            counter.close()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert len(counter.shapes) > 2
        assert all(b * length <= 100 or b == 1 for b, length in counter.shapes)
    with pytest.raises(ValueError, match="max_batch_tokens must be >= 1 or None, got -1"):
        RerankJudge(model, tok, max_batch_tokens=-1)


@pytest.mark.parametrize("name", ["qwen3_judge", "opt", "cohere", "gemma2"])
def test_log_likelihood_shared_prefix_equals_the_unshared_path(zoo, name):
    """The LL scorer's groups share the context and the programs' common opening: response
    tokens inside the prefix are scored from the prefill, the rest from the continuations."""
    from rlkd_fast.judges import LogLikelihoodScorer

    model, tok = load_judge_model(zoo, name)
    questions, programs = grpo_batch()
    questions, programs = questions + ["Mia reads 7 pages."], programs + [""]  # no tokens
    shared = LogLikelihoodScorer(model, tok, batch_size=5, max_batch_tokens=160, chunk=7)
    alone = LogLikelihoodScorer(model, tok, batch_size=1, max_batch_tokens=None,
                                share_prefix=False)
    assert shared.share_prefix == (name in SHARED)
    ids = [shared._encode(q, p)[0] for q, p in zip(questions, programs)]
    groups, _ = _prefix_groups(questions, ids)
    context = len(shared._encode(questions[0], "")[0])
    assert groups[0].prefix > context  # the programs' common opening is inside the prefix
    got, want = shared.score(questions, programs), alone.score(questions, programs)
    assert got.reward[-1] == want.reward[-1] == float("-inf")
    torch.testing.assert_close(got.reward[:-1], want.reward[:-1], atol=1e-5, rtol=0)
    assert torch.equal(got.extras["tokens"], want.extras["tokens"])
    assert got.reward[:-1].max() - got.reward[:-1].min() > 1e-2
