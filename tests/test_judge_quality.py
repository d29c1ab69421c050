"""The Table 3 protocol on scripted students with known answers, and the CLI end to end."""

import json

import pytest
import torch
from test_evaluate import ScriptedLM, body

from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.data import Problem
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.executor import PotExecutor
from rlkd_fast.judge_quality import (
    Pair,
    collect_pairs,
    judge_quality,
    main,
    pairwise_accuracy,
    pick_pair,
)
from rlkd_fast.judges import Judge, JudgeScores, LogLikelihoodScorer, YoNJudge

FAIL = body("x = 0", "return 1 / x")
# Samples per question (answer 6 everywhere). Pairs: q1 (first right, first wrong), q2 (the wrong
# number is preferred to the earlier failure), q5 (only a failure is incorrect). No pair: q3
# (all right), q4 (none right), q6 would pair but n=3 stops before it.
SCRIPT = {
    "q1 has 6": dict(greedy="", samples=[body("a = 6", "return a"), body("return 5"),
                                         body("return 6"), body("return 4")]),
    "q2 has 6": dict(greedy="", samples=[FAIL, body("return 6.001"), body("return 7"),
                                         body("return 6")]),
    "q3 has 6": dict(greedy="", samples=[body("return 6")] * 4),
    "q4 has 6": dict(greedy="", samples=[body("return 3"), FAIL, FAIL, body("return 2")]),
    "q5 has 6": dict(greedy="", samples=[FAIL, FAIL, body("return 6"), FAIL]),
    "q6 has 6": dict(greedy="", samples=[body("return 6"), body("return 1")] * 2),
}
PROBLEMS = [Problem(q[:2], q, 6.0) for q in SCRIPT]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(list(SCRIPT) + [t for s in SCRIPT.values() for t in s["samples"]],
                           vocab_size=300)


@pytest.fixture(scope="module")
def executor():
    with PotExecutor(workers=1, timeout_s=5.0, conventions="reft") as ex:
        yield ex


def _header(q: str) -> str:
    return f'def solution():\n    """{q}"""\n'


def test_pick_pair_rules():
    p = Problem("x", "q", 6.0)
    assert pick_pair(p, ["a", "b", "c"], [None, 7.0, 6.0]) == Pair(p, "c", "b")
    assert pick_pair(p, ["a", "b"], [None, 6.0]) == Pair(p, "b", "a")
    assert pick_pair(p, ["a", "b"], [6.0, 6.005]) is None
    assert pick_pair(p, ["a", "b"], [5.0, None]) is None


def test_collect_pairs_known_answers(tokenizer, executor):
    model = ScriptedLM(tokenizer, SCRIPT)
    pairs, stats = collect_pairs(model, tokenizer, PROBLEMS, executor, n=3, samples=4, chunk=4)
    assert [p.problem.id for p in pairs] == ["q1", "q2", "q5"]
    h = _header
    assert pairs[0].correct == h("q1 has 6") + "    a = 6\n    return a"
    assert pairs[0].incorrect == h("q1 has 6") + "    return 5"
    assert pairs[1].correct == h("q2 has 6") + "    return 6.001"
    assert pairs[1].incorrect == h("q2 has 6") + "    return 7"
    assert pairs[2].incorrect == h("q5 has 6") + "    x = 0\n    return 1 / x"
    assert stats == {"questions_seen": 5, "pairs": 3, "all_correct": 1, "none_correct": 1}


class _LineJudge(Judge):
    """Scores a program by its number of lines: right on q1, tied on q2, wrong on q5."""

    name = "lines"

    def score(self, questions, programs):
        return JudgeScores(torch.tensor([float(p.count("\n")) for p in programs]))


def test_pairwise_accuracy_counts(tokenizer, executor):
    pairs, _ = collect_pairs(ScriptedLM(tokenizer, SCRIPT), tokenizer, PROBLEMS, executor,
                             n=3, samples=4)
    out = pairwise_accuracy(_LineJudge(), pairs)
    assert out["accuracy"] == pytest.approx(1 / 3) and out["ties"] == 1 and out["n"] == 3
    assert pairwise_accuracy(_LineJudge(), [])["accuracy"] is None


def test_real_judges_agree_with_their_scores(tokenizer, executor):
    model = tiny_causal_lm(tokenizer, hidden_size=32, layers=1, heads=2, seed=5)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    judges = {"yon": YoNJudge(model, tokenizer, delta=0.0), "ll": LogLikelihoodScorer(model,
                                                                                      tokenizer)}
    student = ScriptedLM(tokenizer, SCRIPT)
    out = judge_quality(student, tokenizer, PROBLEMS, judges, executor, n=10, samples=4)
    assert out["collection"]["pairs"] == 4  # q1, q2, q5, q6
    pairs, _ = collect_pairs(student, tokenizer, PROBLEMS, executor, n=10, samples=4)
    for name, judge in judges.items():
        good = judge.score([p.problem.question for p in pairs], [p.correct for p in pairs])
        bad = judge.score([p.problem.question for p in pairs], [p.incorrect for p in pairs])
        want = (good.reward > bad.reward).float().mean().item()
        assert out["judges"][name]["accuracy"] == pytest.approx(want)
        assert out["judges"][name]["n"] == 4


def test_cli_end_to_end(tmp_path, capsys):
    tok = train_tokenizer(["Question: Ava has 3 apples", "def solution():\n    return 3"],
                          vocab_size=280)
    student = save_atomic(tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2), tok,
                        tmp_path / "student")
    judge = save_atomic(tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2, seed=1), tok,
                      tmp_path / "judge")
    out = tmp_path / "jq.json"
    result = main(["--student", str(student), "--judge", str(judge), "--dataset", "synthetic",
                   "--n", "2", "--limit", "3", "--samples", "2", "--max-new-tokens", "4",
                   "--workers", "1", "--timeout", "2", "--device", "cpu", "--out", str(out),
                   "--no-progress"])
    saved = json.loads(out.read_text())
    assert set(saved["judges"]) == {"yon", "ll"} == set(result["judges"])
    assert 1 <= saved["collection"]["questions_seen"] <= 3
    assert "yon" in capsys.readouterr().out
