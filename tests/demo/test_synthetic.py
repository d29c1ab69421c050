"""The synthetic generator: exact programs, determinism, variety, disjoint splits."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from rlkd_fast.demo.synthetic import SYNTHETIC_SPLITS, synthetic_problem, synthetic_split
from rlkd_fast.prompts import count_program_lines, program_body, program_header

N = 3000


@pytest.fixture(scope="module")
def problems():
    return [synthetic_problem(i % 13, seed=i) for i in range(N)]


def run(program: str) -> float:
    scope: dict = {}
    exec(program, scope)  # plain exec: our own generated programs
    return scope["solution"]()


def operations(program: str) -> int:
    return sum(f" {op} " in line for line in program.split("\n") for op in "+-*/")


def numbers(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def test_every_program_executes_to_its_answer(problems):
    for p in problems:
        got = run(p.program)
        assert isinstance(got, (int, float)) and got == p.answer, (p.question, p.program, got)
        assert p.answer == int(p.answer) and p.answer >= 0


def test_programs_follow_refts_format_and_copy_the_numbers(problems):
    for p in problems:
        assert p.program.startswith(program_header(p.question))
        body = program_body(p.program).split("\n")
        assert body[-2:] == [
            f"    result = {body[-3].split(' = ')[0].strip()}",
            "    return result",
        ]
        assert all(line.startswith("    ") and " = " in line for line in body[:-1])
        # every number of the question is assigned to a variable, and no other number appears
        # in the program except the constants 2 and 3 that words like "half" or "twice" carry
        literals = [int(v) for v in re.findall(r"= (\d+)$", "\n".join(body), re.M)]
        assert sorted(literals) == sorted(numbers(p.question))
        assert len(set(literals)) == len(literals)  # distinct: the copy is unambiguous
        code = re.sub(r"[A-Za-z_]\w*", "", "\n".join(body))  # drop names (money_left_2)
        assert set(numbers(re.sub(r"= \d+$", "", code, flags=re.M))) <= {2, 3}
        assert len(p.question.split()) <= 40
        assert count_program_lines(p.program) <= 11


def test_deterministic_per_seed_and_index():
    assert synthetic_problem(123, seed=5) == synthetic_problem(123, seed=5)
    assert synthetic_problem(123, seed=5) != synthetic_problem(123, seed=6)
    assert synthetic_problem(123, seed=5) != synthetic_problem(124, seed=5)
    assert synthetic_split("train", 20, seed=3) == synthetic_split("train", 20, seed=3)
    assert synthetic_split("train", 10, seed=3) == synthetic_split("train", 20, seed=3)[:10]


def test_variety_same_skeleton_with_other_numbers_and_words(problems):
    def skeleton(q: str) -> str:
        return re.sub(r"\d+", "N", q)

    assert len({p.question for p in problems}) > 0.99 * len(problems)  # splits dedupe the rest
    answers = Counter(p.answer for p in problems)
    assert answers.most_common(1)[0][1] < len(problems) / 20  # no answer dominates
    # operators of every kind and every step count up to 4 occur
    code = "\n".join(p.program for p in problems)
    assert all(f" {op} " in code for op in "+-*/")
    steps = Counter(operations(p.program) for p in problems)
    assert set(steps) == {1, 2, 3, 4} and min(steps.values()) > len(problems) / 10
    # one wording appears with many different numbers, and the shapes are many
    shapes = Counter(skeleton(p.question) for p in problems)
    assert len(shapes) > len(problems) / 3
    by_shape: dict[str, set] = {}
    for p in problems:
        by_shape.setdefault(skeleton(p.question), set()).add(p.answer)
    repeated = [answers for shape, answers in by_shape.items() if shapes[shape] > 1]
    assert len(repeated) > 50
    assert sum(len(a) > 1 for a in repeated) > 0.9 * len(repeated)  # the numbers decide
    first_words = Counter(p.question.split()[0] for p in problems)
    assert len(first_words) >= 20  # names and scenes vary


def test_max_steps_bounds_the_operations():
    for max_steps in (1, 2, 3):
        steps = Counter()
        for i in range(150):
            p = synthetic_problem(i, max_steps=max_steps)
            assert run(p.program) == p.answer
            steps[operations(p.program)] += 1
        assert set(steps) == set(range(1, max_steps + 1))
    with pytest.raises(ValueError, match="max_steps"):
        synthetic_problem(0, max_steps=5)


def test_splits_are_disjoint_and_labeled_as_asked():
    splits = {s: synthetic_split(s, 300, seed=0, labeled=True) for s in SYNTHETIC_SPLITS}
    other_seed = synthetic_split("test", 300, seed=1)
    for ps in splits.values():
        assert len(ps) == 300 and len({p.question for p in ps}) == 300
    questions = {s: {p.question for p in ps} for s, ps in splits.items()}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["unlabeled"]
    assert not questions["unlabeled"] & questions["test"]

    # disjoint in substance too: the same numbers in the same story never cross splits
    def story(p):  # the sentences with numbers blanked, and the numbers
        return re.sub(r"\d+", "N", p.question), tuple(numbers(p.question))

    train_stories = {story(p) for p in splits["train"]}
    assert not any(story(p) in train_stories for p in other_seed)
    unlabeled = synthetic_split("unlabeled", 5)  # answers kept for monitoring, no programs
    assert [(p.question, p.answer) for p in unlabeled] == \
        [(p.question, p.answer) for p in splits["unlabeled"][:5]]
    assert all(p.program is None for p in unlabeled)
    bare = synthetic_split("unlabeled", 5, labeled=False)
    assert all(p.answer is None and p.program is None for p in bare)
    with pytest.raises(ValueError, match="split"):
        synthetic_split("validation", 5)


def test_an_exhausted_split_raises_instead_of_looping(monkeypatch):
    from rlkd_fast.demo import synthetic as data

    one = synthetic_problem(0)
    monkeypatch.setattr(data, "_synthetic", lambda index, seed, max_steps: (one, "same key"))
    monkeypatch.setattr(data, "_MAX_MISSES", 50)
    split = next(
        s for s in SYNTHETIC_SPLITS if data._bucket("same key") in range(*data._SPLIT_BUCKETS[s])
    )
    assert synthetic_split(split, 1) == [one]
    with pytest.raises(ValueError, match="ran out of new problems after 1"):
        synthetic_split(split, 2)
