"""The judge shipped in rlkd_fast/demo/judge/, checked on questions it never saw: the synthetic
``test`` split (its vocabulary comes from ``train``), with a warm-up student's own programs
(the build's check) and with corrupted gold programs of a seed no build uses."""

import json
import random

import pytest
from helpers import run_here

from rlkd_fast.data import Problem, load_split
from rlkd_fast.demo.build_judge import CHECK_PAIRS
from rlkd_fast.demo.judge_artifact import build_record, embedded_judge_dir
from rlkd_fast.demo.mistakes import KINDS, corrupt_program, label_programs
from rlkd_fast.judge_quality import Pair, pairwise_accuracy
from rlkd_fast.judges import YoNJudge

FRESH_SEED = 31337  # not a seed the build or any default run uses
TABLE3_TARGET = 0.85  # pairwise accuracy on the student's own programs (the paper's judge: 0.88)


@pytest.fixture(scope="module")
def judge():
    return YoNJudge.from_pretrained(embedded_judge_dir(), delta=0.0, batch_size=64)


def fresh_pairs(n: int, kinds=KINDS) -> list[Pair]:
    """Gold programs of held-out questions against a corrupted copy (of ``kinds``) that runs to
    a wrong answer or fails (labelled by running it)."""
    problems = load_split("synthetic:2", split="test", size=n, seed=FRESH_SEED)
    rng = random.Random(FRESH_SEED)
    bad = [corrupt_program(p.program, rng, p.question, kinds) for p in problems]
    labels = label_programs([(p.question, b, p.answer) for p, b in zip(problems, bad)], run_here)
    return [Pair(p, p.program, b) for p, b, (_, _, ok) in zip(problems, bad, labels) if not ok]


def test_shipped_judge_matches_its_build_record():
    record = build_record()
    assert record["command"].startswith("python -m rlkd_fast.demo.build_judge")
    assert record["check"]["yon"]["n"] >= 200  # the Table 3 protocol's size
    assert embedded_judge_dir()  # every file has the recorded SHA-256


def test_shipped_judge_ranks_a_students_own_programs(judge):
    """The paper's Table 3 protocol, re-measured on the build check's pairs: one right and one
    wrong program of a fresh warm-up student on each of >= 200 held-out questions."""
    rows = [json.loads(line) for line in
            (embedded_judge_dir() / CHECK_PAIRS).read_text().splitlines()]
    pairs = [Pair(Problem(str(i), r["question"], r["answer"]), r["correct"], r["incorrect"])
             for i, r in enumerate(rows)]
    assert len(pairs) >= 200
    result = pairwise_accuracy(judge, pairs)
    assert result["accuracy"] >= TABLE3_TARGET, result
    assert result["accuracy"] == pytest.approx(build_record()["check"]["yon"]["accuracy"])


def test_shipped_judge_catches_miscopied_numbers_and_cut_off_bodies(judge):
    """Measured: 96% and 100% on these pairs (a miscopy that swaps in another number the
    question states is not caught)."""
    miscopied = pairwise_accuracy(judge, fresh_pairs(200, kinds=("miscopy",)))
    assert miscopied["n"] >= 150 and miscopied["accuracy"] >= 0.9, miscopied
    cut_off = pairwise_accuracy(judge, fresh_pairs(100, kinds=("truncate",)))
    assert cut_off["n"] >= 50 and cut_off["accuracy"] >= 0.95, cut_off


def test_shipped_judge_is_narrow_where_it_says_it_is(judge):
    """A changed operator, swapped operands or an early return keep the stated numbers and the
    names: the checklist passes them (a tie with the right program), as docs/method.md says."""
    result = pairwise_accuracy(judge, fresh_pairs(120, kinds=("operator", "swap",
                                                              "early_return")))
    assert result["n"] >= 60 and result["ties"] >= 0.9 * result["n"], result
