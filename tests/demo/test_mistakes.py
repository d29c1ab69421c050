"""Mistakes for testing judges: corruptions that change answers, in the kinds a student makes,
and labels from execution."""

import random
import re

from helpers import run_here

from rlkd_fast.data import load_split
from rlkd_fast.demo.mistakes import corrupt_program, label_programs


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


def test_label_tolerance_and_failures():
    progs = ["def solution():\n    return 2.005\n", "def solution():\n    return 2.02\n",
             "def solution():\n    return 1 / 0\n", "def solution():\n    return 'two'\n"]
    labels = label_programs([("q", p, 2.0) for p in progs], run_here)
    assert [ok for _, _, ok in labels] == [True, False, False, False]
