"""The trainer's PPO update on a hand-built batch against a reference written out in the test."""

import torch
import torch.nn.functional as F

from rlkd_fast.policy import PolicyWithValue, SequenceBatch
from rlkd_fast.ppo import ALGORITHMS, Experience, RLSettings, ppo_token_advantages, score_tokens
from rlkd_fast.sft import sft_batch


def tiny_policy(vocab=23, hidden=16, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=64, pad_token_id=0)
    return PolicyWithValue(LlamaForCausalLM(cfg))


def hand_batch():
    # 3 rows: left-padded prompts, responses of lengths 4, 2 and 5 (right padded).
    prompt = torch.tensor([[0, 5, 6, 7], [0, 0, 8, 9], [3, 4, 5, 6]])
    pmask = (prompt != 0).long()
    resp = torch.tensor([[10, 11, 12, 2, 0], [13, 2, 0, 0, 0], [14, 15, 16, 17, 2]])
    rmask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    return SequenceBatch(prompt, pmask, resp, rmask)


def reference_ppo(policy, ref_policy, batch, scores, kl_coef, gamma, lam, clip, vclip, vf):
    """ReFT's PPO, spelled out: per-token KL reward, GAE by a reverse loop, whitening,
    clipped surrogate + clipped value loss, mean over each sequence then over the batch."""
    ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    att = torch.cat([batch.prompt_mask, batch.response_mask], 1)
    pos = (att.cumsum(1) - 1).clamp(min=0)
    P = batch.prompt_ids.shape[1]

    def forward(p):
        h = p.lm.base_model(input_ids=ids, attention_mask=att, position_ids=pos)[0][:, P - 1:-1]
        lp = F.log_softmax(p.lm.lm_head(h), -1).gather(-1, batch.response_ids[..., None])[..., 0]
        v = p.value_head(h)[..., 0] if p.value_head is not None else None
        return lp, v

    with torch.no_grad():
        old, v_old = forward(policy)
        ref, _ = forward(ref_policy)
    mask = batch.response_mask.double()
    B, T = mask.shape
    rewards = -kl_coef * (old - ref) * mask
    for b in range(B):
        last = int(mask[b].nonzero().max())
        rewards[b, last] += scores[b]
    adv = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        running, next_v = 0.0, 0.0
        for t in reversed(range(T)):
            if mask[b, t] == 0:
                continue
            delta = rewards[b, t] + gamma * next_v - v_old[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
            next_v = v_old[b, t]
    ret = (adv + v_old) * mask
    n = mask.sum()
    mean = (adv * mask).sum() / n
    var = (((adv - mean) * mask) ** 2).sum() / (n - 1)
    white = (adv - mean) / torch.sqrt(var + 1e-8) * mask

    lp, v = forward(policy)
    ratio = torch.exp(lp - old)
    pg = torch.maximum(-white * ratio, -white * ratio.clamp(1 - clip, 1 + clip))
    vc = v_old + (v - v_old).clamp(-vclip, vclip)
    vl = 0.5 * torch.maximum((v - ret) ** 2, (vc - ret) ** 2)
    per_seq = lambda x: ((x * mask).sum(1) / mask.sum(1)).mean()
    return per_seq(pg) + vf * per_seq(vl), white, ret


def test_ppo_update_matches_reference():
    """fp32 policy through the kernels vs a float64 copy through plain PyTorch: same loss, same
    gradients, on a batch whose ratios are far enough from 1 that some tokens clip."""
    import copy

    policy, ref = tiny_policy(seed=0), tiny_policy(seed=1)
    ref.value_head = None
    batch = hand_batch()
    scores = torch.tensor([1.0, 0.1, 0.0])
    kl, gamma, lam, clip, vclip, vf = 0.05, 1.0, 0.95, 0.2, 0.2, 0.5
    old, ref_lp, values = score_tokens(policy, ref, batch)
    adv, ret = ppo_token_advantages(scores, batch.response_mask, old, ref_lp, values, kl, gamma,
                                    lam, whiten=True)
    exp = Experience("vr", batch, scores, old, ref_lp, adv, values, ret)
    with torch.no_grad():  # move the policy away from the one that sampled
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    twin = copy.deepcopy(policy).double()

    settings = RLSettings(clip=clip, value_clip=vclip, vf_coef=vf, reduction="seq-mean-token-mean")
    loss, stats = ALGORITHMS["ppo"].loss(policy, exp, settings)
    loss.backward()
    exp64 = Experience("vr", batch, scores.double(), old.double(), ref_lp.double(),
                       adv.double(), values.double(), ret.double())
    ref_loss = reference_from_experience(twin, exp64, clip, vclip, vf)
    ref_loss.backward()
    assert 0 < stats["clip_frac"] < 1, "the moved policy should clip some tokens, not all"
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(policy.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-3, atol=1e-6, msg=name)


def reference_from_experience(policy, exp, clip, vclip, vf):
    batch = exp.batch
    ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    att = torch.cat([batch.prompt_mask, batch.response_mask], 1)
    pos = (att.cumsum(1) - 1).clamp(min=0)
    P = batch.prompt_ids.shape[1]
    h = policy.lm.base_model(input_ids=ids, attention_mask=att, position_ids=pos)[0][:, P - 1:-1]
    lp = F.log_softmax(policy.lm.lm_head(h), -1).gather(-1, batch.response_ids[..., None])[..., 0]
    v = policy.value_head(h)[..., 0]
    mask = batch.response_mask.double()
    ratio = torch.exp(lp - exp.old_logprobs)
    a = exp.advantages
    pg = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip, 1 + clip))
    vc = exp.old_values + (v - exp.old_values).clamp(-vclip, vclip)
    vl = 0.5 * torch.maximum((v - exp.returns) ** 2, (vc - exp.returns) ** 2)
    per_seq = lambda x: ((x * mask).sum(1) / mask.sum(1)).mean()
    return per_seq(pg) + vf * per_seq(vl)


def test_experience_advantages_match_reft_reference():
    policy, ref = tiny_policy(seed=0), tiny_policy(seed=1)
    ref.value_head = None
    batch = hand_batch()
    scores = torch.tensor([1.0, 0.1, 0.0])
    old, ref_lp, values = score_tokens(policy, ref, batch)
    adv, ret = ppo_token_advantages(scores, batch.response_mask, old, ref_lp, values, 0.05, 1.0,
                                    0.95, whiten=True)
    _, white, ref_ret = reference_ppo(policy.double(), ref.double(), batch, scores.double(),
                                      0.05, 1.0, 0.95, 0.2, 0.2, 0.5)
    torch.testing.assert_close(adv.double(), white, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ret.double(), ref_ret, rtol=1e-5, atol=1e-6)


class _Tok:
    """One id per character; a text or a list of texts, as Hugging Face tokenizers take."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=False):
        def ids(t: str) -> list[int]:
            return [2 + (ord(c) % 50) for c in t]

        return {"input_ids": [ids(t) for t in text] if isinstance(text, list) else ids(text)}


def test_sft_batch_masks_the_prompt_and_ends_in_eos():
    from rlkd_fast.data import Problem

    prog = 'def solution():\n    """Q?"""\n    a = 1\n    return a'
    ids, lab, att = sft_batch(_Tok(), [Problem("1", "Q?", 1.0, prog)], lambda q: "P:" + q,
                              100, 100)
    n_prompt = len("P:Q?")
    assert (lab[0, :n_prompt] == -100).all() and (lab[0, n_prompt:] != -100).all()
    assert lab[0, -1] == 1 and ids[0, -1] == 1 and att.sum() == ids.shape[1]
