"""The static-cache decode loop on every student architecture of the zoo (and the heads that
transform their logits): greedy tokens and sampled draws equal HF ``generate``'s, log-probs equal
the trainer's forward. Models the loop cannot serve fall back to HF ``generate`` (tested on the
tiny Llama in ``tests/test_decode.py``); every zoo student is served."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import STUDENTS, Zoo

from rlkd_fast.decode import decode, unsupported_reason
from rlkd_fast.models import load_causal_lm
from rlkd_fast.policy import PolicyWithValue, SequenceBatch
from rlkd_fast.ppo import score_tokens
from rlkd_fast.prompts import program_header
from rlkd_fast.rollout import _eos_ids, pad_rows, response_mask

QUESTIONS = ["Tom has 3 apples and buys 5 more. How many apples does he have now?",
             "Sam had 9 cards.",
             "A box holds 12 pens. How many pens are in 4 boxes?"]
NEW = 8


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


@pytest.mark.parametrize("name", STUDENTS + ["gemma2", "cohere"])
def test_static_loop_equals_hf_generate(zoo, name):
    model, tok = load_causal_lm(zoo.path(name), device="cpu")
    model.eval()
    assert unsupported_reason(model) is None
    encoded = tok([program_header(q) for q in QUESTIONS], add_special_tokens=False)["input_ids"]
    ids, mask = pad_rows(encoded, tok.pad_token_id, "left")
    rows, row_mask = ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)
    eos, pad = _eos_ids(model, tok), tok.pad_token_id
    for kw in (dict(do_sample=False), dict(do_sample=True, temperature=0.7, top_k=0, top_p=0.95)):
        torch.manual_seed(1)  # 3 rows per prompt: each prompt prefilled once where allowed
        ours = decode(model, ids, mask, NEW, eos, pad, copies=3, **kw)
        torch.manual_seed(1)
        theirs = model.generate(input_ids=rows, attention_mask=row_mask, max_new_tokens=NEW,
                                pad_token_id=pad, eos_token_id=eos, **kw)[:, ids.shape[1]:]
        assert torch.equal(ours.tokens, theirs), kw
    # The sampled rows' log-probs are what the trainer's forward computes.
    rmask = response_mask(ours.tokens, eos, pad)
    batch = SequenceBatch(rows, row_mask, ours.tokens.masked_fill(rmask == 0, pad), rmask)
    old, _, _ = score_tokens(PolicyWithValue(model, with_value=False).eval(), None, batch, 0.7)
    valid = rmask.bool()
    torch.testing.assert_close(ours.logprobs[valid], old[valid], rtol=0, atol=1e-5)
