"""Rollout generation on a tiny saved checkpoint, against unbatched HF generate."""

import pytest
import torch

from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.models import load_causal_lm
from rlkd_fast.rollout import generate, pad_rows, response_mask

PROMPTS = [
    "Question:\nTom has 3 apples and buys 5 more.\nAnswer reasoning:\n",
    "Question:\nx\nAnswer reasoning:\n",
    "Question:\nA box holds 12 pens. How many pens are in 4 boxes of pens?\nAnswer reasoning:\n",
    "Question:\nSam had 9 cards.\nAnswer reasoning:\n",
]
NEW = 10


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    tok = train_tokenizer(PROMPTS * 3 + ["def solution():\n    a = 3\n    return a"],
                          vocab_size=300)
    model = tiny_causal_lm(tok, hidden_size=32, layers=2, heads=2, seed=0)
    with torch.no_grad():  # larger weights: varied greedy outputs instead of one repeated token
        for p in model.parameters():
            p.mul_(3.0)
    path = save_atomic(model, tok, tmp_path_factory.mktemp("student"))
    return load_causal_lm(path, device="cpu")


def _alone(model, tok, prompt: str, eos: int) -> list[int]:
    """Greedy tokens of one unpadded prompt, cut after the first EOS."""
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=NEW, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    resp = out[0, ids.shape[1]:].tolist()
    return resp[:resp.index(eos) + 1] if eos in resp else resp


def test_response_mask_cases():
    pad, eos = 0, 9
    ids = torch.tensor([
        [5, 6, 9, 0, 0],   # EOS then padding
        [5, 9, 7, 9, 0],   # first EOS counts
        [5, 6, 7, 0, 0],   # stopped without EOS (stop string): up to the last real token
        [5, 6, 7, 8, 4],   # ran out of tokens
        [9, 0, 0, 0, 0],   # EOS at once
    ])
    want = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1],
                         [1, 0, 0, 0, 0]])
    assert torch.equal(response_mask(ids, [eos], pad), want)
    # pad == eos (many tokenizers): the first EOS ends the response.
    assert torch.equal(response_mask(torch.tensor([[5, 0, 0], [5, 6, 7]]), [0], 0),
                       torch.tensor([[1, 1, 0], [1, 1, 1]]))


def test_pad_rows():
    ids, mask = pad_rows([[1, 2], [3], []], pad_id=9, side="left")
    assert ids.tolist() == [[1, 2], [9, 3], [9, 9]] and mask.tolist() == [[1, 1], [0, 1], [0, 0]]
    ids, mask = pad_rows([[1, 2], [3]], pad_id=9, side="right")
    assert ids.tolist() == [[1, 2], [3, 9]] and mask.tolist() == [[1, 1], [1, 0]]
    with pytest.raises(ValueError, match="side"):
        pad_rows([[1]], 0, side="middle")


def test_greedy_batched_matches_unbatched(lm):
    model, tok = lm
    first = generate(model, tok, PROMPTS, max_new_tokens=NEW, batch_size=3)
    # Make a token the model emits mid-response the EOS, so rows stop at different steps:
    # the one that gives the most distinct stopping points, with some row never emitting it.
    rows = first.response_ids.tolist()

    def stops(t):
        return {r.index(t) if t in r else NEW for r in rows}

    candidates = sorted({t for r in rows for t in r if NEW in stops(t)})
    eos = max(candidates, key=lambda t: len(stops(t)))
    model.generation_config.eos_token_id = eos
    out = generate(model, tok, PROMPTS, max_new_tokens=NEW, batch_size=3)
    assert out.response_ids.shape[0] == len(PROMPTS) and out.prompt_index.tolist() == [0, 1, 2, 3]
    lengths = []
    for i, prompt in enumerate(PROMPTS):
        want = _alone(model, tok, prompt, eos)
        n = int(out.response_mask[i].sum())
        lengths.append(n)
        assert out.response_ids[i, :n].tolist() == want
        assert out.response_mask[i, :n].all() and not out.response_mask[i, n:].any()
        assert (out.response_ids[i, n:] == tok.pad_token_id).all()
        assert out.texts[i] == tok.decode(want, skip_special_tokens=True)
        # Prompts are left padded and hold exactly the prompt's tokens.
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        P = out.prompt_ids.shape[1]
        assert out.prompt_ids[i, P - len(ids):].tolist() == ids
        assert out.prompt_mask[i].sum() == len(ids) and out.prompt_mask[i, P - len(ids):].all()
        assert (out.prompt_ids[i, :P - len(ids)] == tok.pad_token_id).all()
    assert min(lengths) < max(lengths) == NEW  # some rows stopped at EOS, one ran out
    ids, mask = out.sequences()
    assert ids.shape == (len(PROMPTS), out.prompt_ids.shape[1] + out.response_ids.shape[1])
    assert torch.equal(mask.sum(1), out.prompt_mask.sum(1) + out.response_mask.sum(1))
    model.generation_config.eos_token_id = tok.eos_token_id


def test_samples_are_consecutive_and_ordered(lm):
    model, tok = lm
    greedy = generate(model, tok, PROMPTS, max_new_tokens=NEW, num_samples=3, batch_size=4)
    # top_k=1 sampling is greedy: each prompt's 3 rows must equal its greedy row, in order.
    topk1 = generate(model, tok, PROMPTS, max_new_tokens=NEW, do_sample=True, top_k=1,
                     num_samples=3, batch_size=5)
    assert greedy.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert torch.equal(topk1.response_ids, greedy.response_ids)
    assert torch.equal(topk1.prompt_ids, greedy.prompt_ids)
    torch.manual_seed(0)
    sampled = generate(model, tok, PROMPTS, max_new_tokens=NEW, do_sample=True, num_samples=3,
                       batch_size=6)
    assert sampled.response_ids.shape[0] == 12 and len(sampled.texts) == 12
    assert not torch.equal(sampled.response_ids, greedy.response_ids[:, :sampled.response_ids
                                                                    .shape[1]])


def test_training_mode_restored_and_bad_args(lm):
    model, tok = lm
    model.train()
    generate(model, tok, PROMPTS[:1], max_new_tokens=2)
    assert model.training
    model.eval()
    with pytest.raises(ValueError, match="no prompts"):
        generate(model, tok, [], max_new_tokens=2)
    with pytest.raises(ValueError, match=">= 1"):
        generate(model, tok, PROMPTS, num_samples=0)


def test_loading_defaults(lm, tmp_path):
    from transformers import PreTrainedTokenizerFast

    from rlkd_fast.models import default_dtype, load_tokenizer

    tok = train_tokenizer(PROMPTS, vocab_size=280)
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<eos>")
    no_pad.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == "<eos>" and loaded.padding_side == "left"
    assert default_dtype(torch.device("cpu")) == torch.float32
    assert default_dtype(torch.device("cuda")) == torch.bfloat16
    model, tokenizer = lm
    assert model.dtype == torch.float32 and not model.training
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None


def test_special_tokens_only_when_asked(lm):
    import copy

    from tokenizers.processors import TemplateProcessing

    model, tok = lm
    bos_tok = copy.deepcopy(tok)
    bos_tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    assert bos_tok(PROMPTS[0])["input_ids"][0] == tok.bos_token_id
    plain = generate(model, bos_tok, PROMPTS[:2], max_new_tokens=2)
    with_bos = generate(model, bos_tok, PROMPTS[:2], max_new_tokens=2, add_special_tokens=True)
    first = lambda r: [row[m.bool()][0].item() for row, m in zip(r.prompt_ids, r.prompt_mask)]
    assert tok.bos_token_id not in first(plain)
    assert first(with_bos) == [tok.bos_token_id] * 2
    assert (with_bos.prompt_mask.sum(1) == plain.prompt_mask.sum(1) + 1).all()
