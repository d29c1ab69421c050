"""The policy's forward with each distinct prompt run once (GRPO's K samples share it) against
the one-pass forward, on every student architecture of the zoo and the logit-transforming heads:
logits, values and gradients equal within float rounding, and each prompt reaches the model
once. Models that cannot share (sliding-window layers: Gemma) take the one-pass forward."""

from __future__ import annotations

import pytest
import torch
from arch_zoo import STUDENTS, Zoo

from rlkd_fast.models import load_causal_lm
from rlkd_fast.policy import PolicyWithValue, SequenceBatch
from rlkd_fast.rollout import pad_rows

SLIDING = {"gemma3_text", "gemma3", "gemma2"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def _batch(tok, k: int = 3) -> SequenceBatch:
    prompts = ["def solution():\n    apples = 3", "x = 1", "def solution():"]
    ids, mask = pad_rows(tok(prompts, add_special_tokens=False)["input_ids"], tok.pad_token_id)
    ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    gen = torch.Generator().manual_seed(0)
    resp = torch.randint(5, 60, (len(ids), 6), generator=gen)
    rmask = torch.ones_like(resp)
    rmask[::2, 4:] = 0  # rows that ended early
    return SequenceBatch(ids, mask, resp.masked_fill(rmask == 0, tok.pad_token_id), rmask)


@pytest.mark.parametrize("name", STUDENTS + ["gemma2", "cohere"])
def test_shared_prompts_equal_the_one_pass_forward(zoo, name):
    model, tok = load_causal_lm(zoo.path(name), device="cpu")
    policy = PolicyWithValue(model).eval()
    assert policy._shares_prompts == (name not in SLIDING)
    if name in SLIDING:
        return
    batch = _batch(tok)
    fed: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: fed.append(args[0].shape[0]))
    results = {}
    for shared in (True, False):
        policy._shares_prompts = shared
        policy.zero_grad()
        logits, values = policy(batch)
        (logits.float().logsumexp(-1).mean() + values.mean()).backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
        results[shared] = (logits.detach(), values.detach(), grads)
    hook.remove()
    assert fed[:2] == [3, 9]  # shared: 3 distinct prompts once, then the 9 rows' responses
    assert fed[2:] == [9]  # one pass: every row's prompt again
    (l1, v1, g1), (l2, v2, g2) = results[True], results[False]
    torch.testing.assert_close(l1, l2, rtol=0, atol=1e-5)
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-5)
    assert g1.keys() == g2.keys()
    for key in g1:
        torch.testing.assert_close(g1[key], g2[key], rtol=1e-4, atol=1e-6, msg=key)


def test_active_dropout_takes_the_one_pass_forward(zoo):
    """Dropout draws per row: a shared prompt would share its draws, so it is not shared."""
    model, tok = load_causal_lm(zoo.path("opt"), device="cpu")  # dropout 0.1 in its config
    policy = PolicyWithValue(model).train()
    fed: list[int] = []
    model.get_input_embeddings().register_forward_hook(
        lambda _m, args, _out: fed.append(args[0].shape[0]))
    policy(_batch(tok))
    assert fed == [9]
    policy.eval()(_batch(tok))
    assert fed[1:] == [3, 9]
