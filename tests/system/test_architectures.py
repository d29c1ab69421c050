"""The paper's architectures in every role, through the real entry points, on tiny random models.

Students: OPT (Galactica-125M and OPT-350m layouts), CodeGen, Qwen2, Qwen3, GPT-NeoX, GPT-2,
Gemma-3 (text class and the image-text class of Gemma-3-12B), Phi; judges: Qwen3 (chat, thinking
off), Llama-3.1 chat, Phi-3 (SentencePiece), Gemma-3; reranker: an OPT sequence classifier. Each
model carries a tokenizer with its real checkpoint's conventions (``arch_zoo``).

Direct checks: a left-padded row equals the same row alone; the log-probs the trainer computes
equal those ``generate`` sampled from (soft-capped and scaled heads included); the first
minibatch's ratio is exactly 1 and its KL exactly 0 with dropout in the config; every trainable
parameter gets a gradient (what DDP needs). End to end: ``rlkd_fast.train`` (sft+ppo and
sft+grpo, with and without judge and reranker, ``--resume``), ``rlkd_fast.evaluate`` and
``rlkd_fast.judge_quality``.
"""

from __future__ import annotations

import json

import pytest
import torch
from arch_zoo import JUDGES, STUDENTS, Zoo

from rlkd_fast.judges import RerankJudge, YoNJudge, resolve_token_ids
from rlkd_fast.kernels import token_logprobs
from rlkd_fast.models import (
    disable_dropout,
    fusable_trunk,
    load_causal_lm,
    load_sequence_classifier,
)
from rlkd_fast.policy import PolicyWithValue, SequenceBatch
from rlkd_fast.ppo import ALGORITHMS, Experience, RLSettings, score_tokens
from rlkd_fast.prompts import program_header
from rlkd_fast.rollout import pad_rows, response_mask

HEADS = ["gemma2", "cohere"]  # heads that transform logits after the matmul
QUESTIONS = ["Tom has 3 apples and buys 5 more. How many apples does he have now?",
             "A box holds 12 pens. How many pens are in 4 boxes? Each box is full and there "
             "are no other pens.",
             "Sam had 9 cards."]
PROGRAMS = ["def solution():\n    a = 3\n    b = 5\n    return a + b",
            "def solution():\n    return 48",
            "def solution():\n    cards = 9\n    return cards"]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Zoo:
    return Zoo(tmp_path_factory.mktemp("zoo"))


def load_student(zoo: Zoo, name: str):
    return load_causal_lm(zoo.path(name), device="cpu")


def rollout_batch(model, tokenizer, n_new: int = 6, temperature: float = 0.7):
    """Sample responses to two prompts of different lengths the way ``rollout.generate`` does
    (left-padded prompts without special tokens, the model's EOS ids) and return the batch with
    the raw next-token logits ``generate`` sampled from, [N, R, V]."""
    from rlkd_fast.rollout import _eos_ids

    prompts = [program_header(q) for q in QUESTIONS[:2]]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    ids, mask = pad_rows(encoded, tokenizer.pad_token_id, "left")
    eos = _eos_ids(model, tokenizer)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new,
                         do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                         return_dict_in_generate=True, output_logits=True)
    resp = out.sequences[:, ids.shape[1]:]
    rmask = response_mask(resp, eos, tokenizer.pad_token_id)
    resp = resp.masked_fill(rmask == 0, tokenizer.pad_token_id)
    logits = torch.stack(out.logits, dim=1)
    return SequenceBatch(ids, mask, resp, rmask), logits


# --------------------------------------------------------------------------- direct checks
@pytest.mark.parametrize("name", STUDENTS + HEADS)
def test_left_padded_row_equals_the_row_alone(zoo, name):
    model, tok = load_student(zoo, name)
    policy = PolicyWithValue(model).eval()
    rows = [tok(program_header(q), add_special_tokens=False)["input_ids"] for q in QUESTIONS]
    assert len({len(r) for r in rows}) == 3  # each row is padded differently
    resp = torch.tensor([[7, 8, 9, 10]] * 3)
    ids, mask = pad_rows(rows, tok.pad_token_id, "left")
    with torch.no_grad():
        logits, values = policy(SequenceBatch(ids, mask, resp, torch.ones_like(resp)))
        for i, row in enumerate(rows):
            one = SequenceBatch(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long),
                                resp[:1], torch.ones_like(resp[:1]))
            alone_logits, alone_values = policy(one)
            torch.testing.assert_close(logits[i], alone_logits[0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(values[i], alone_values[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", STUDENTS + HEADS)
def test_training_logprobs_equal_sampling_logprobs(zoo, name):
    """What the trainer scores (old log-probs) is what ``generate`` sampled from."""
    model, tok = load_student(zoo, name)
    torch.manual_seed(1)
    batch, sampled_logits = rollout_batch(model, tok)
    policy = PolicyWithValue(model).eval()
    old, _, values = score_tokens(policy, None, batch, temperature=0.7)
    want = (sampled_logits.double() / 0.7).log_softmax(-1)
    want = want.gather(-1, batch.response_ids[..., None])[..., 0]
    valid = batch.response_mask.bool()
    assert valid.sum() >= 4
    torch.testing.assert_close(old[valid].double(), want[valid], rtol=0, atol=2e-4)
    assert values.shape == batch.response_ids.shape
    if name in HEADS:  # the head's raw output is not what was sampled from: the check bites
        with torch.no_grad():
            ids = torch.cat([batch.prompt_ids, batch.response_ids], 1)
            m = torch.cat([batch.prompt_mask, batch.response_mask], 1)
            hidden = model.base_model(input_ids=ids, attention_mask=m,
                                      position_ids=(m.cumsum(1) - 1).clamp(min=0))[0]
            raw = model.get_output_embeddings()(hidden[:, batch.prompt_ids.shape[1] - 1:-1])
        plain = token_logprobs(raw, batch.response_ids, temperature=0.7)
        assert (plain[valid] - old[valid]).abs().max() > 1e-2


def _experience(policy, ref, batch, rl: str) -> Experience:
    old, ref_lp, values = score_tokens(policy, ref, batch, temperature=0.7)
    n = len(batch)
    if rl == "grpo":
        return Experience("vr", batch, torch.zeros(n), old, ref_lp, torch.linspace(-1, 1, n))
    adv = torch.linspace(-1, 1, old.numel()).view_as(old) * batch.response_mask
    return Experience("vr", batch, torch.zeros(n), old, ref_lp, adv, values, values.detach())


def _first_minibatch_stats(policy, ref, batch, rl: str) -> dict[str, float]:
    """Stats of the first minibatch as ``Trainer.update`` computes them: the rollout scored in
    eval mode, the minibatch (rows 1, 0 of it) in train mode."""
    exp = _experience(policy.eval(), ref, batch, rl)
    policy.train()
    settings = RLSettings(clip=0.2, value_clip=0.2, vf_coef=0.5, kl_coef=0.05,
                          reduction="seq-mean-token-mean", temperature=0.7)
    _, stats = ALGORITHMS[rl].loss(policy, exp.select(torch.tensor([1, 0])), settings)
    policy.eval()
    return stats


@pytest.mark.parametrize("name", ["opt", "opt350", "gpt2", "phi"])
@pytest.mark.parametrize("rl", ["ppo", "grpo"])
def test_first_minibatch_ratio_one_and_kl_zero_with_dropout_in_the_config(zoo, name, rl):
    from rlkd_fast.policy import frozen_copy

    model, tok = load_student(zoo, name)
    batch, _ = rollout_batch(model, tok)
    policy = PolicyWithValue(model)
    torch.manual_seed(3)
    with_dropout = _first_minibatch_stats(policy, frozen_copy(policy), batch, rl)
    assert with_dropout["approx_kl"] > 0  # dropout in train mode moves the log-probs
    changed = disable_dropout(policy.lm)
    assert changed and all(p.p == 0 for p in policy.modules()
                           if isinstance(p, torch.nn.modules.dropout._DropoutNd))
    stats = _first_minibatch_stats(policy, frozen_copy(policy), batch, rl)
    assert stats["approx_kl"] == 0.0
    assert stats["ratio_mean"] == 1.0
    assert stats["clip_frac"] == 0.0
    if rl == "grpo":
        assert stats["kl"] == 0.0


@pytest.mark.parametrize("name", STUDENTS)
def test_every_trainable_parameter_gets_a_gradient(zoo, name):
    """DDP waits for a gradient of every parameter that requires one: a text-only forward must
    reach them all (the composite Gemma-3 freezes its vision tower)."""
    model, tok = load_student(zoo, name)
    batch, _ = rollout_batch(model, tok, n_new=3)
    policy = PolicyWithValue(model)
    exp = _experience(policy.eval(), None, batch, "ppo")
    settings = RLSettings(clip=0.2, value_clip=0.2, vf_coef=0.5, reduction="token-mean")
    loss, _ = ALGORITHMS["ppo"].loss(policy.train(), exp, settings)
    loss.backward()
    missing = [n for n, p in policy.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    frozen = [n for n, p in policy.named_parameters() if not p.requires_grad]
    assert all("vision" in n or "multi_modal" in n for n in frozen)
    assert bool(frozen) == (name == "gemma3")


@pytest.mark.parametrize("name", ["opt350", "gemma3"])
def test_value_head_width_follows_what_the_head_reads(zoo, name):
    model, _ = load_student(zoo, name)
    policy = PolicyWithValue(model)
    width = model.get_output_embeddings().weight.shape[1]
    assert policy.value_head.in_features == width
    hidden = model.config.get_text_config().hidden_size
    assert (width != hidden) == (name == "opt350")  # OPT-350m projects 32 -> 16 here


@pytest.mark.parametrize("name", STUDENTS + HEADS)
def test_fused_head_path_only_where_it_reproduces_the_logits(zoo, name):
    """Judges apply the LM head to the trunk's hidden states themselves (fused kernels) only
    where that gives the model's own logits."""
    model, _ = load_student(zoo, name)
    assert (fusable_trunk(model) is None) == (name in HEADS)


def test_an_unknown_logit_transform_is_caught_by_the_probe(zoo):
    """A head transform no config field announces still shows on the load-time probe, and the
    judge then scores from the model's own logits."""
    model, tok = load_causal_lm(zoo.path("llama31_judge"), device="cpu")
    forward = model.forward

    def scaled(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = 3.0 * out.logits
        return out

    model.forward = scaled
    assert fusable_trunk(model) is None
    judge = YoNJudge(model, tok, delta=0.0)
    ids, _ = judge._encode(judge.prompts(QUESTIONS[:1], PROGRAMS[:1]))
    s, mass = _reference_yon(model, tok, ids[0], judge.yes_ids, judge.no_ids)
    got = judge.score(QUESTIONS[:1], PROGRAMS[:1])
    assert got.reward[0].item() == pytest.approx(s, abs=1e-5)
    assert got.extras["mass"][0].item() == pytest.approx(mass, abs=1e-5)


# --------------------------------------------------------------------------- judges
def _reference_yon(model, tok, prompt_ids: list[int], yes, no) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids])).logits[0, -1].double()
    s = torch.sigmoid(logits[yes].logsumexp(0) - logits[no].logsumexp(0))
    return s.item(), logits.softmax(0)[yes + no].sum().item()


@pytest.mark.parametrize("name", JUDGES)
def test_chat_judge_prompt_conventions_and_scores(zoo, name):
    judge = YoNJudge.from_pretrained(zoo.path(name), device="cpu", delta=0.0, batch_size=2)
    tok = judge.tokenizer
    prompts = judge.prompts(QUESTIONS, PROGRAMS)
    ids, _ = judge._encode(prompts)
    for row in ids:
        bos = [i for i, t in enumerate(row) if t == tok.bos_token_id]
        # A rendered chat template carries the BOS itself (Qwen has none): never twice.
        assert bos == ([0] if tok.bos_token_id is not None else [])
        assert tok.decode(row).endswith("\n")  # the generation prompt; thinking is off
    if name == "qwen3_judge":
        assert all(p.endswith("<think>\n\n</think>\n\n") for p in prompts)
    spelled = {tok.decode([i]).strip() for i in judge.yes_ids}
    assert spelled == {"Yes"} and len(judge.yes_ids) >= 2  # the bare and the prefixed piece
    got = judge.score(QUESTIONS, PROGRAMS)
    for i, row in enumerate(ids):
        s, mass = _reference_yon(judge.model, tok, row, judge.yes_ids, judge.no_ids)
        assert got.reward[i].item() == pytest.approx(s, abs=1e-5)
        assert got.extras["mass"][i].item() == pytest.approx(mass, abs=1e-5)


@pytest.mark.parametrize("name", ["phi3_judge", "gemma3_judge"])
def test_judge_reads_the_bare_answer_after_a_newline(zoo, name):
    """SentencePiece tokenizers encode "Yes" and " Yes" alike ("▁Yes"); after a chat prompt
    that ends in a newline the judge writes the bare "Yes". A judge whose head puts its mass
    there must show a high Yes+No mass and a Yes verdict."""
    model, tok = load_causal_lm(zoo.path(name), device="cpu")
    vocab = tok.get_vocab()
    bare, prefixed = vocab["Yes"], vocab["\u2581Yes"]
    assert tok.encode("Yes", add_special_tokens=False) == tok.encode(
        " Yes", add_special_tokens=False) or name == "gemma3_judge"
    assert {bare, prefixed} <= set(resolve_token_ids(tok, ["Yes"]))
    probe = YoNJudge(model, tok, delta=0.0)
    ids, _ = probe._encode(probe.prompts(QUESTIONS, PROGRAMS))
    with torch.no_grad():  # point the bare "Yes" row of the head at the prompts' last states
        trunk = model.get_decoder()
        last = torch.stack([trunk(input_ids=torch.tensor([r]))[0][0, -1] for r in ids])
        head = model.get_output_embeddings().weight
        head[bare] = 40 * last.mean(0) / last.mean(0).norm() ** 2
    got = YoNJudge(model, tok, delta=0.0).score(QUESTIONS, PROGRAMS)
    assert got.extras["mass"].min() > 0.9
    assert got.reward.min() > 0.9


def test_reranker_rows_alone_equal_rows_in_a_batch(zoo):
    """ReFT's reranker: an OPT classifier whose (Galactica) tokenizer names no pad token; the
    config's pad id 1 finds each right-padded row's last token."""
    model, tok = load_sequence_classifier(zoo.path("opt_reranker"), device="cpu")
    assert tok.pad_token_id == model.config.pad_token_id == 1
    batch = RerankJudge(model, tok, batch_size=3).score(QUESTIONS, PROGRAMS).reward
    alone = torch.cat([RerankJudge(model, tok, batch_size=1).score([q], [p]).reward
                       for q, p in zip(QUESTIONS, PROGRAMS)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)
    assert len(set(batch.tolist())) == 3


# --------------------------------------------------------------------------- entry points
TINY = [
    "max_train=8", "max_unlabeled=8", "max_eval=2", "sft_epochs=0.5", "sft_batch_size=4",
    "sft_target_accuracy=0",
    "rollout_batch=2", "grpo_group=2", "minibatch_size=2", "ppo_epochs=1", "max_new_tokens=8",
    "max_prompt_tokens=96", "rl_steps=2", "save_every=1", "progress=false", "exec_workers=1",
    "prompt_style=header", "labeled=synthetic:1", "unlabeled=synthetic:1",
    "eval_dataset=synthetic:1", "temperature=1.0", "judge_batch_size=4",
]
# (student, RL stage, judge, reranker): every student, stage, judge and combination once.
RUNS = [
    ("opt", "ppo", "qwen3_judge", None),
    ("opt350", "ppo", None, "opt_reranker"),
    ("codegen", "grpo", "llama31_judge", None),
    ("qwen2", "ppo", "phi3_judge", None),
    ("qwen3", "grpo", "gemma3_judge", "opt_reranker"),
    ("gpt_neox", "ppo", "qwen3_judge", "opt_reranker"),
    ("gpt2", "grpo", None, None),
    ("gemma3_text", "grpo", "phi3_judge", None),
    ("gemma3", "ppo", "llama31_judge", None),
    ("phi", "ppo", "gemma3_judge", None),
]


def train_args(zoo: Zoo, out, student: str, stage: str, judge: str | None,
               reranker: str | None, cache) -> list[str]:
    coefs = {(False, False): (1, 0, 0), (True, False): (0.5, 0.5, 0),
             (False, True): (0.5, 0, 0.5), (True, True): (0.5, 0.25, 0.25)}
    vr, yon, rerank = coefs[(judge is not None, reranker is not None)]
    args = [f"output_dir={out}", f"cache_dir={cache}", *TINY, f"student={zoo.path(student)}",
            f"stages=sft,{stage}", f"coef_vr={vr}", f"coef_yon={yon}", f"coef_rerank={rerank}"]
    if judge:
        args.append(f"judge={zoo.path(judge)}")
    if reranker:
        args.append(f"reranker={zoo.path(reranker)}")
    return args


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("student, stage, judge, reranker", RUNS,
                         ids=["-".join(filter(None, r)) for r in RUNS])
def test_train_entry_point(zoo, tmp_path, student, stage, judge, reranker):
    from rlkd_fast.train import main

    summary = main(train_args(zoo, tmp_path, student, stage, judge, reranker, tmp_path))
    assert summary["steps"] == 2 and summary["sft_steps"] == 1
    rl = [r for r in records(tmp_path) if r.get("stage") == stage]
    sources = ["vr"] + (["yon"] if judge else []) + (["rerank"] if reranker else [])
    for source in sources:
        assert 0 <= rl[0][f"reward/{source}"] <= 1
        # Dropout off (Galactica, OPT-350m, GPT-2 and Phi have it in their configs): before
        # the first optimizer step the policy is the one that sampled.
        assert rl[0][f"{source}/approx_kl"] == 0.0, source
        assert rl[0][f"{source}/ratio_mean"] == 1.0
        assert (f"{source}/value_loss" in rl[0]) == (stage == "ppo")
        if stage == "grpo":  # the KL to the reference, an identical copy at the first step
            assert rl[0][f"{source}/kl"] == 0.0
    if judge:
        assert 0 < rl[0]["judge/yon_mass"] <= 1
    config = json.loads((tmp_path / (tmp_path / "latest").read_text() / "policy" /
                         "config.json").read_text())
    text = config.get("text_config", config)
    assert not any(v for k, v in text.items() if "drop" in k and isinstance(v, float))


@pytest.mark.parametrize("student, stage", [("opt350", "ppo"), ("gemma3", "grpo")])
def test_resume_matches_an_uninterrupted_run(zoo, tmp_path, student, stage):
    from safetensors.torch import load_file

    from rlkd_fast.train import main

    def run(out, *extra):
        return main([*train_args(zoo, tmp_path / out, student, stage, None, None, tmp_path),
                     *extra])

    run("straight", "rl_steps=3")
    run("split", "rl_steps=1")
    summary = run("split", "rl_steps=3", "resume=true")
    assert summary["resumed_from"] is not None and summary["steps"] == 3
    a, b = (load_file(tmp_path / d / (tmp_path / d / "latest").read_text() / "policy" /
                      "model.safetensors") for d in ("straight", "split"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# Every student goes through rlkd_fast.evaluate.evaluate inside the training runs; the command
# line (its own loading) runs with the tokenizer that names no EOS (Galactica), the composite
# class and a chat-style EOS.
@pytest.mark.parametrize("name", ["opt", "gemma3", "qwen3"])
def test_evaluate_entry_point(zoo, tmp_path, name):
    from rlkd_fast.evaluate import main

    out = tmp_path / "eval.json"
    results = main(["--model", str(zoo.path(name)), "--datasets", "synthetic:1", "--limit", "2",
                    "--max-new-tokens", "6", "--prompt-style", "header", "--workers", "1",
                    "--no-progress", "--device", "cpu", "--out", str(out)])
    assert results["synthetic:1"]["n"] == 2
    assert json.loads(out.read_text())["results"]["synthetic:1"]["n"] == 2


@pytest.mark.parametrize("judge", JUDGES)
def test_judge_quality_entry_point(zoo, tmp_path, monkeypatch, judge):
    """Table 3 through the CLI with each judge (and the reranker with one of them). A random
    student never writes a right program, so its samples are scripted: one right and one wrong
    program per question; loading, execution and every judge run for real."""
    import rlkd_fast.judge_quality as jq

    def scripted(model, tokenizer, problems, samples, do_sample, **kwargs):
        out = []
        for p in problems:
            right = f"def solution():\n    x = {p.answer}\n    return x"
            out += [right, "def solution():\n    return -1"] * (samples // 2)
        return out

    monkeypatch.setattr(jq, "sample_programs", scripted)
    args = ["--student", str(zoo.path("opt")), "--judge", str(zoo.path(judge)),
            "--dataset", "synthetic:1", "--n", "2", "--samples", "2", "--workers", "1",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "jq.json")]
    if judge == "gemma3_judge":
        args += ["--reranker", str(zoo.path("opt_reranker"))]
    result = jq.main(args)
    assert result["collection"]["pairs"] == 2
    names = {"yon", "ll"} | ({"rerank"} if judge == "gemma3_judge" else set())
    assert set(result["judges"]) == names
    for r in result["judges"].values():
        assert r["n"] == 2 and r["accuracy"] is not None
