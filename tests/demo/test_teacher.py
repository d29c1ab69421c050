"""The embedded judge's teaching: mistakes that change answers, labels from execution, token
labels that say where a program goes wrong, and a Yes/No loop that learns a separable task."""

import random
import re

from helpers import run_here

from rlkd_fast.data import load_split
from rlkd_fast.demo.teacher import (
    JudgeExample,
    corrupt_program,
    judge_examples,
    label_programs,
    teach_judge,
    token_labels,
)
from rlkd_fast.demo.tiny import tiny_causal_lm, train_word_tokenizer
from rlkd_fast.judges import YoNJudge
from rlkd_fast.prompts import judge_prompt


def test_corruptions_change_most_answers():
    problems = load_split("synthetic:2", split="train", size=120, seed=5)
    rng = random.Random(0)
    bad = [corrupt_program(p.program, rng, p.question) for p in problems]
    changed = [b != p.program for b, p in zip(bad, problems)]
    assert sum(changed) >= 0.95 * len(problems)
    labels = label_programs([(p.question, b, p.answer) for p, b in zip(problems, bad)], run_here)
    wrong = sum(not ok for _, _, ok in labels)
    assert wrong >= 0.8 * len(problems), wrong  # a few mistakes happen to give the same number


def test_corruptions_include_the_students_common_mistakes():
    """Miscopied numbers (a number of the body that is not in the question) and undefined names
    (a run-time NameError) are each a sizeable share, as in a warm-up student's samples."""
    problems = load_split("synthetic:2", split="train", size=200, seed=7)
    rng = random.Random(1)
    bad = [(p, corrupt_program(p.program, rng, p.question)) for p in problems]
    miscopied = undefined = 0
    for p, b in bad:
        body = b.split('"""')[-1]
        if set(re.findall(r"\d+", body)) - set(re.findall(r"\d+", p.question)) - {"2"}:
            miscopied += 1
        (res,) = run_here([b])
        undefined += res.status == "error"
    assert miscopied >= 0.15 * len(problems) and undefined >= 0.15 * len(problems), \
        (miscopied, undefined)


def test_judge_examples_are_labelled_by_execution():
    problems = load_split("synthetic:2", split="train", size=40, seed=6)
    examples = judge_examples([p.question for p in problems], [p.program for p in problems],
                              [p.answer for p in problems], run_here, seed=1, wrong_per_right=2)
    assert len(examples) == 3 * len(problems)
    assert all(e.correct and e.program == p.program for e, p in zip(examples[::3], problems))
    for e in examples:  # every label is what running the program says
        (res,) = run_here([e.program])
        gold = next(p for p in problems if p.question == e.question)
        right = res.status == "ok" and abs(res.value - gold.answer) <= 1e-2
        assert e.correct == right
        if not right:  # the copy equals its original up to error_at, and differs there
            assert e.program[:e.error_at] == gold.program[:e.error_at]
            assert e.program[e.error_at:e.error_at + 1] != gold.program[e.error_at:e.error_at + 1]


def test_token_labels_mark_where_the_program_goes_wrong():
    question = "Ava has 12 apples. She eats 5. How many are left?"
    right = (f'def solution():\n    """{question}"""\n    apples = 12\n    eaten = 5\n'
             "    left = apples - eaten\n    return left")
    wrong = right.replace("eaten = 5", "eaten = 7")
    tok = train_word_tokenizer([judge_prompt(question, right)] * 2)
    ids, labels = token_labels(JudgeExample(question, wrong, False, wrong.index("7")), tok)
    words = tok.convert_ids_to_tokens(ids)
    body = next(i for i in range(len(words)) if words[i:i + 2] == ["apples", "="])
    assert set(labels[:body - 1]) == {-1.0}  # template, question and docstring: not taught
    seven = words.index("7")
    assert set(labels[body:seven]) == {1.0} and set(labels[seven:]) == {0.0}
    _, ok_labels = token_labels(JudgeExample(question, right, True), tok)
    assert set(ok_labels[body:]) == {1.0}
    _, unknown = token_labels(JudgeExample(question, wrong, False), tok)  # where: unknown
    assert set(unknown[:-1]) == {-1.0} and unknown[-1] == 0.0


def test_label_tolerance_and_failures():
    progs = ["def solution():\n    return 2.005\n", "def solution():\n    return 2.02\n",
             "def solution():\n    return 1 / 0\n", "def solution():\n    return 'two'\n"]
    labels = label_programs([("q", p, 2.0) for p in progs], run_here)
    assert [ok for _, _, ok in labels] == [True, False, False, False]


def test_teach_judge_learns_a_separable_task():
    """Programs that return ``apples`` are right, those that return ``pears`` wrong (as an
    undefined name would be): after teaching, the YoN judge scores held-out right programs above
    wrong ones, and the loss has fallen."""
    def example(n, fruit):
        q = f"Ava has {n} apples."
        p = f'def solution():\n    """{q}"""\n    apples = {n}\n    return {fruit}'
        return JudgeExample(q, p, fruit == "apples", None if fruit == "apples" else p.rindex(fruit))

    train = [example(n, fruit) for n in range(1, 60) for fruit in ("apples", "pears")]
    tok = train_word_tokenizer([judge_prompt(e.question, e.program) for e in train])
    model = tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2, seed=0)
    losses = teach_judge(model, tok, train, steps=60, batch_size=16, lr=3e-3, progress=False)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    judge = YoNJudge(model, tok, delta=0.0)
    held_out = [example(n, fruit) for n in (77, 91) for fruit in ("apples", "pears")]
    scores = judge.score([e.question for e in held_out], [e.program for e in held_out]).reward
    assert scores[0] > scores[1] and scores[2] > scores[3], scores
