"""The tiny teacher's parts: mistakes that change answers, labels from execution, and a Yes/No
teaching loop that learns a separable task."""

import random
from types import SimpleNamespace

import torch

from rlkd_fast import pot
from rlkd_fast.data import load_split
from rlkd_fast.demo.teacher import corrupt_program, judge_examples, label_programs, teach_judge
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.judges import resolve_token_ids

STATUS = {pot.OK: "ok", pot.ERROR: "error", pot.NONNUMERIC: "nonnumeric"}


def run_here(programs: list[str]) -> list[SimpleNamespace]:
    """An in-process stand-in for PotExecutor.run (the programs are our own, trusted)."""
    out = []
    for p in programs:
        status, value, _, _ = pot.run_program(pot.reft_program(p).encode(), pot.REFT)
        out.append(SimpleNamespace(status=STATUS[status], value=value))
    return out


def test_corruptions_change_most_answers():
    problems = load_split("synthetic:2", split="train", size=120, seed=5)
    rng = random.Random(0)
    bad = [corrupt_program(p.program, rng) for p in problems]
    changed = [b != p.program for b, p in zip(bad, problems)]
    assert sum(changed) >= 0.95 * len(problems)
    labels = label_programs([(p.question, b, p.answer) for p, b in zip(problems, bad)], run_here)
    wrong = sum(not ok for _, _, ok in labels)
    assert wrong >= 0.8 * len(problems), wrong  # a few mistakes happen to give the same number


def test_judge_examples_are_labelled_by_execution():
    problems = load_split("synthetic:2", split="train", size=40, seed=6)
    examples = judge_examples([p.question for p in problems], [p.program for p in problems],
                              [p.answer for p in problems], run_here, seed=1, wrong_per_right=2)
    assert len(examples) == 3 * len(problems)
    assert all(ok for _, _, ok in examples[::3])  # the gold programs
    for q, prog, ok in examples:  # every label is what running the program says
        (res,) = run_here([prog])
        gold = next(p.answer for p in problems if p.question == q)
        right = res.status == "ok" and abs(res.value - gold) <= 1e-2
        assert ok == right


def test_label_tolerance_and_failures():
    progs = ["def solution():\n    return 2.005\n", "def solution():\n    return 2.02\n",
             "def solution():\n    return 1 / 0\n", "def solution():\n    return 'two'\n"]
    labels = label_programs([("q", p, 2.0) for p in progs], run_here)
    assert [ok for _, _, ok in labels] == [True, False, False, False]


def test_teach_judge_learns_a_separable_task():
    """Prompts mentioning apples are correct, pears wrong: after teaching, z_Yes - z_No says so
    on held-out prompts."""
    def prompt(fruit, n):
        return f"Question: {n} {fruit}\nIs the above solution correct? Answer:"

    train = [(prompt(f, n), f == "apples") for n in range(40) for f in ("apples", "pears")]
    tok = train_tokenizer([p for p, _ in train] + [" Yes", " No"], vocab_size=300)
    model = tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2, seed=0)
    yes, no = resolve_token_ids(tok, ["Yes"]), resolve_token_ids(tok, ["No"])
    losses = teach_judge(model, tok, [p for p, _ in train], [y for _, y in train], yes, no,
                         epochs=6, batch_size=16, lr=3e-3, progress=False)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    held_out = [prompt(f, n) for n in (77, 99) for f in ("apples", "pears")]
    enc = tok(held_out, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits[:, -1]
    margin = torch.logsumexp(logits[:, yes], -1) - torch.logsumexp(logits[:, no], -1)
    assert margin[0] > margin[1] and margin[2] > margin[3], margin
