"""The static-cache decode loop (``rlkd_fast.decode``) against HF ``generate`` on a tiny Llama-style
student: greedy tokens equal, sampled draws equal under the same seed (temperature, top-k, top-p),
HF's warpers reproduced, early-finished rows, log-probs against a full forward, the fallback to HF
``generate``. The other architectures: ``system/test_decode_architectures.py``."""

import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.decode import decode, draw, unsupported_reason, warp_logits
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.models import load_causal_lm
from rlkd_fast.policy import PolicyWithValue, SequenceBatch
from rlkd_fast.ppo import score_tokens
from rlkd_fast.rollout import _eos_ids, engine_for, generate, pad_rows

PROMPTS = [
    "Question:\nTom has 3 apples and buys 5 more.\nAnswer reasoning:\n",
    "Question:\nx\nAnswer reasoning:\n",
    "Question:\nA box holds 12 pens. How many pens are in 4 boxes of pens?\nAnswer reasoning:\n",
    "Question:\nSam had 9 cards.\nAnswer reasoning:\n",
]
NEW = 12
#: Log-probs of the incremental decode vs one full forward (fp32; different reduction orders).
LOGPROB_ATOL = 1e-5


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    tok = train_tokenizer(PROMPTS * 3 + ["def solution():\n    a = 3\n    return a"],
                          vocab_size=300)
    model = tiny_causal_lm(tok, hidden_size=32, layers=2, heads=2, seed=0)
    with torch.no_grad():  # larger weights: varied outputs instead of one repeated token
        for p in model.parameters():
            p.mul_(3.0)
    path = save_atomic(model, tok, tmp_path_factory.mktemp("student"))
    model, tok = load_causal_lm(path, device="cpu")
    return model.eval(), tok


def _batch(tok, prompts=PROMPTS):
    ids, mask = pad_rows(tok(list(prompts), add_special_tokens=False)["input_ids"],
                         tok.pad_token_id, "left")
    assert len(prompts) == 1 or (mask == 0).any()  # left padding to handle
    return ids, mask


def _hf(model, tok, ids, mask, eos, **kw):
    kw.setdefault("max_new_tokens", NEW)
    out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=tok.pad_token_id,
                         eos_token_id=eos, **kw)
    return out[:, ids.shape[1]:]


def _mid_response_eos(tokens: torch.Tensor) -> int:
    """A token the model emits mid-response in some rows and never in another, to serve as EOS
    so that rows stop at different steps."""
    rows = tokens.tolist()
    stops = lambda t: {r.index(t) if t in r else len(r) for r in rows}
    candidates = [t for r in rows for t in r if len(rows[0]) in stops(t)]
    return max(sorted(set(candidates)), key=lambda t: len(stops(t)))


def test_greedy_equals_hf_generate(lm):
    model, tok = lm
    ids, mask = _batch(tok)
    eos = _eos_ids(model, tok)
    out = decode(model, ids, mask, NEW, eos, tok.pad_token_id)
    assert torch.equal(out.tokens, _hf(model, tok, ids, mask, eos, do_sample=False))
    assert len({tuple(r) for r in out.tokens.tolist()}) == len(PROMPTS)  # varied outputs


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 0, 1.0), (1.0, 5, 1.0),
                                                       (1.3, 0, 0.8), (0.7, 7, 0.9)])
def test_sampled_draws_equal_hf_generate_under_the_same_seed(lm, temperature, top_k, top_p):
    model, tok = lm
    ids, mask = _batch(tok)
    ids, mask = ids.repeat_interleave(8, 0), mask.repeat_interleave(8, 0)
    eos = _eos_ids(model, tok)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p)
    torch.manual_seed(5)
    ours = decode(model, ids, mask, NEW, eos, tok.pad_token_id, do_sample=True, **kw).tokens
    torch.manual_seed(5)
    theirs = _hf(model, tok, ids, mask, eos, do_sample=True, **kw)
    assert torch.equal(ours, theirs)
    assert len({tuple(r) for r in ours.tolist()}) > len(PROMPTS)  # samples differ


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 0, 1.0), (1.0, 3, 1.0),
                                                       (0.5, 0, 0.6), (2.0, 4, 0.3),
                                                       (1.0, 0, 0.999), (1.0, 100, 0.5)])
def test_warpers_equal_hf_in_hf_order(temperature, top_k, top_p):
    """Temperature, then top-k (ties at the k-th value kept), then top-p, as HF applies them."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 37, generator=gen) * 3
    logits[0, :5] = logits[0, 5]  # ties around the k-th value
    logits[1] = 0.0  # a flat row
    logits[2, 3] = 40.0  # one dominant token
    want = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        want = TopKLogitsWarper(top_k)(None, want)
    if top_p < 1:
        want = TopPLogitsWarper(top_p)(None, want)
    got = warp_logits(logits, temperature, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(want))
    torch.testing.assert_close(got[~torch.isinf(got)], want[~torch.isinf(want)], rtol=0, atol=0)


@pytest.mark.parametrize("sampler", ["inverse_cdf", "multinomial"])
def test_draws_follow_the_probabilities(sampler):
    """Each sampler's token frequencies over many draws match the probabilities (zeros never
    drawn), within 5 standard errors."""
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.1, 0.15, 0.05, 0.0])
    n = 40_000
    got = torch.bincount(draw(probs.expand(n, -1).contiguous(), sampler), minlength=8) / n
    assert (got[probs == 0] == 0).all()
    sigma = (probs * (1 - probs) / n).sqrt()
    assert ((got - probs).abs() <= 5 * sigma + 1e-9).all(), (got, probs)


def test_inverse_cdf_rollouts_match_hf_in_distribution(lm):
    """Per-position token frequencies of the first two sampled tokens, ours (inverse CDF) vs
    HF generate's, over 600 samples of one prompt: total variation distance below what two
    samples of that size from one distribution exceed (checked against HF vs HF)."""
    model, tok = lm
    ids, mask = _batch(tok, PROMPTS[:1])
    eos = _eos_ids(model, tok)
    n, kw = 600, dict(temperature=1.0, top_k=8, top_p=0.95)
    torch.manual_seed(0)
    ours = decode(model, ids, mask, 2, eos, tok.pad_token_id, do_sample=True, copies=n,
                  sampler="inverse_cdf", **kw).tokens
    hf = [_hf(model, tok, ids.expand(n, -1), mask.expand(n, -1), eos, do_sample=True,
              max_new_tokens=2, **kw) for _ in range(2)]

    def tv(a, b, pos):
        fa = torch.bincount(a[:, pos], minlength=len(tok)) / len(a)
        fb = torch.bincount(b[:, pos], minlength=len(tok)) / len(b)
        return 0.5 * (fa - fb).abs().sum().item()

    for pos in (0, 1):
        assert len(torch.unique(ours[:, pos])) > 2  # a real distribution, not one token
        assert tv(ours, hf[0], pos) < max(0.12, 2 * tv(hf[0], hf[1], pos)), pos


def test_early_finished_rows_stop_and_match_hf(lm):
    model, tok = lm
    ids, mask = _batch(tok)
    free = decode(model, ids, mask, NEW, _eos_ids(model, tok), tok.pad_token_id)
    eos = _mid_response_eos(free.tokens)
    out = decode(model, ids, mask, NEW, [eos], tok.pad_token_id, temperature=0.7)
    assert torch.equal(out.tokens, _hf(model, tok, ids, mask, [eos], do_sample=False))
    lengths = []
    for row, logp in zip(out.tokens.tolist(), out.logprobs):
        n = row.index(eos) + 1 if eos in row else len(row)
        lengths.append(n)
        assert all(t == tok.pad_token_id for t in row[n:])  # finished rows get the pad id
        assert (logp[n:] == 0).all() and (logp[:n] < 0).all()
    assert min(lengths) < max(lengths)
    assert out.tokens.shape[1] == max(lengths)  # stops once every row has finished


def test_all_rows_finished_early_stops_the_loop(lm):
    model, tok = lm
    ids, mask = _batch(tok)
    free = decode(model, ids, mask, NEW, _eos_ids(model, tok), tok.pad_token_id)
    first = free.tokens[:, 0].tolist()  # every row's first token ends it
    out = decode(model, ids, mask, NEW, first, tok.pad_token_id)
    assert out.tokens.shape == (len(PROMPTS), 1)


def test_rollout_logprobs_equal_a_full_forward(lm):
    """The sampling pass's log-probs are the trainer's old log-probs (same temperature, full
    softmax), within LOGPROB_ATOL."""
    model, tok = lm
    torch.manual_seed(2)
    roll = generate(model, tok, PROMPTS, max_new_tokens=NEW, do_sample=True, temperature=0.7,
                    top_k=5, top_p=0.9, num_samples=3, batch_size=6, engine="static")
    batch = SequenceBatch(roll.prompt_ids, roll.prompt_mask, roll.response_ids,
                          roll.response_mask)
    old, _, _ = score_tokens(PolicyWithValue(model, with_value=False).eval(), None, batch, 0.7)
    valid = roll.response_mask.bool()
    assert valid.sum() > 20
    torch.testing.assert_close(roll.logprobs[valid], old[valid], rtol=0, atol=LOGPROB_ATOL)
    assert (roll.logprobs[~valid] == 0).all()


def test_rollout_engines_give_the_same_rollout(lm):
    model, tok = lm
    rolls = {}
    for engine in ("static", "hf"):
        torch.manual_seed(4)
        rolls[engine] = generate(model, tok, PROMPTS, max_new_tokens=NEW, do_sample=True,
                                 temperature=0.7, num_samples=4, batch_size=8, engine=engine)
    assert torch.equal(rolls["static"].response_ids, rolls["hf"].response_ids)
    assert rolls["static"].texts == rolls["hf"].texts
    assert rolls["hf"].logprobs is None  # HF generate does not record them: the trainer scores


def test_unsupported_generation_config_falls_back_to_hf(lm):
    model, tok = lm
    assert engine_for(model) == "static"
    assert engine_for(model, stop_strings=["\n"]) == "hf"  # only HF honours those
    model.generation_config.repetition_penalty = 1.5
    try:
        assert "repetition_penalty" in unsupported_reason(model)
        assert engine_for(model) == "hf"
        with pytest.raises(ValueError, match="repetition_penalty"):
            generate(model, tok, PROMPTS, max_new_tokens=NEW, engine="static")
        roll = generate(model, tok, PROMPTS, max_new_tokens=NEW)
        ids, mask = _batch(tok)
        want = _hf(model, tok, ids, mask, _eos_ids(model, tok), do_sample=False)
        assert torch.equal(roll.response_ids[:, :want.shape[1]], want)
    finally:
        model.generation_config.repetition_penalty = 1.0
    with pytest.raises(ValueError, match="engine"):
        engine_for(model, "vllm")


def test_bad_arguments_are_refused(lm):
    model, tok = lm
    ids, mask = _batch(tok)
    for kw in (dict(temperature=0.0), dict(top_p=0.0), dict(top_k=-1), dict(top_p=1.5)):
        with pytest.raises(ValueError, match="temperature > 0"):
            decode(model, ids, mask, NEW, [0], tok.pad_token_id, do_sample=True, **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replay_equals_the_eager_loop(lm):
    model, tok = lm
    model = model.cuda()
    try:
        ids, mask = (t.cuda() for t in _batch(tok))
        eos = _eos_ids(model, tok)
        eager = decode(model, ids, mask, NEW, eos, tok.pad_token_id, cuda_graph=False)
        for _ in range(2):  # the second call replays the graph captured by the first
            graph = decode(model, ids, mask, NEW, eos, tok.pad_token_id, cuda_graph=True)
            assert torch.equal(graph.tokens, eager.tokens)
            torch.testing.assert_close(graph.logprobs, eager.logprobs)
    finally:
        model.cpu()
