"""The checklist judge's circuit against a plain-Python statement of its checklist, on fresh
programs, at every position a prompt can take in a batch."""

import builtins
import keyword
import random
import re

import pytest
import torch

from rlkd_fast.data import load_split
from rlkd_fast.demo.checklist_judge import (
    checklist_judge,
    checklist_tokenizer,
    unstated_constants,
)
from rlkd_fast.demo.mistakes import corrupt_program
from rlkd_fast.judges import YoNJudge
from rlkd_fast.prompts import judge_prompt

# Never a program's own variable: Python's keywords and builtins, the judge prompt's words.
NOT_NAMES = {*keyword.kwlist, *dir(builtins), "Question", "Proposed", "solution", "Is", "the",
             "above", "correct", "Answer", "with", "Yes", "or", "No"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    gold = load_split("synthetic:2", split="train", seed=4, size=400)
    tok = checklist_tokenizer(judge_prompt(p.question, p.program) for p in gold)
    constants = unstated_constants((p.question, p.program) for p in gold)
    path = tmp_path_factory.mktemp("judge")
    checklist_judge(tok, constants).save_pretrained(path)
    tok.save_pretrained(path)
    return YoNJudge.from_pretrained(path, delta=0.0, batch_size=16), constants


def expected_verdict(question: str, program: str, vocab: dict, constants: set) -> bool:
    """The checklist in plain Python, on the judge's words: after the docstring, no number
    first seen there (other than the unstated constants), no name read before its first
    appearance, a ``return``, and every number stated before the body used."""
    words = ["<bos>"] + [w if w in vocab else "<unk>"
                         for w in re.findall(r'"""|\w+|\n|[^\w\s]', judge_prompt(question,
                                                                                  program))]
    quotes = [i for i, w in enumerate(words) if w == '"""']
    if len(quotes) < 2:
        return False  # no body: no return either
    body_start = quotes[1]
    for i in range(body_start + 1, len(words)):
        w, first = words[i], words[i] not in words[:i]
        if first and w.isdigit() and w not in constants:
            return False
        name = w == "<unk>" or (re.fullmatch(r"[A-Za-z_]\w*", w) and not w.isdigit())
        if first and name and w not in NOT_NAMES and words[i - 1] != "\n":
            return False
    body = words[body_start:]
    stated = {w for w in words[:body_start] if w.isdigit() and w not in constants}
    return "return" in body and stated <= set(body)


def fresh_programs(n: int, seed: int) -> list[tuple[str, str]]:
    problems = load_split("synthetic:2", split="test", size=n, seed=seed)
    rng = random.Random(seed)
    return [(p.question, p.program if i % 3 == 0 else corrupt_program(p.program, rng, p.question))
            for i, p in enumerate(problems)]


def test_the_circuit_computes_the_checklist_on_fresh_programs(built):
    judge, constants = built
    pairs = fresh_programs(150, seed=8)
    scores = judge.score([q for q, _ in pairs], [p for _, p in pairs]).reward
    vocab = judge.tokenizer.get_vocab()
    want = torch.tensor([expected_verdict(q, p, vocab, constants) for q, p in pairs])
    assert 0.3 < want.float().mean() < 0.7  # both verdicts are exercised
    assert torch.equal(scores > 0.5, want)
    assert bool((scores[want] > 0.95).all()) and bool((scores[~want] < 0.05).all())


@pytest.mark.parametrize("body, verdict", [
    ("    toys = 80\n    given = 32\n    left = toys - given\n    return left", True),
    ("    toys = 60\n    given = 32\n    left = toys - given\n    return left", False),
    ("    toys = 80\n    given = 32\n    left = toys - gift\n    return left", False),
    ("    toys = 80\n    left = toys - given\n    given = 32\n    return left", False),
    ("    toys = 80\n    given = 32\n    left = toys - given\n    half = left / 2\n"
     "    return half", True),  # 2: an unstated constant
    ("    toys = 80\n    given = 32\n    left = toys - given\n    return lefty", False),
    ("    toys = 80\n    given = 32\n    left = toys - given\n    result = left", False),
    ("    toys = 80\n    left = toys\n    return left", False),  # 32 is never used
    ("\ftoys\u00a0=\u300080\n\x0bgiven = 32\n    left = toys - given\n    return left", True),
    ("    toys = 80\n    given = 32\n    left = int(toys - given)\n    return abs(left)", True),
])
def test_each_check(built, body, verdict):
    judge, _ = built
    question = "Carla has 80 toys. She gives 32 toys to Ben. How many toys does Carla have now?"
    program = f'def solution():\n    """{question}"""\n{body}'
    (score,) = judge.score([question], [program]).reward
    assert (score > 0.5) == verdict, score


def test_the_verdict_does_not_depend_on_batch_padding_or_prefix_sharing(built):
    """Left padding in a batch, programs continuing after a shared question prefix, and a
    prompt ~1,500 tokens long all give the scores of each prompt scored alone."""
    judge, _ = built
    problem = load_split("synthetic:2", split="test", size=1, seed=9)[0]
    rng = random.Random(9)
    programs = [problem.program] + [corrupt_program(problem.program, rng, problem.question)
                                    for _ in range(5)]
    pairs = [(problem.question, p) for p in programs] + fresh_programs(8, seed=10)
    long_q = problem.question + " Then" * 1400
    pairs.append((long_q, programs[1].replace(problem.question, long_q)))
    assert judge.share_prefix
    alone = torch.cat([judge.score([q], [p]).reward for q, p in pairs])
    together = judge.score([q for q, _ in pairs], [p for _, p in pairs]).reward
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    assert bool(((alone > 0.95) | (alone < 0.05)).all()) and alone[0] > 0.95


def test_the_tokenizer_gives_one_token_per_number_name_and_docstring_quote():
    tok = checklist_tokenizer(['def solution():\n    """Ava has 12 pens."""\n    pens = 12 + 1'])
    ids = tok('def solution():\n    """Ava has 12 pens."""\n    pens = 12 + 9999').input_ids
    words = tok.convert_ids_to_tokens(ids)
    assert words[0] == "<bos>" and words.count('"""') == 2
    assert "12" in words and "9999" in words and "pens" in words and "<unk>" not in words


def test_every_stated_number_must_be_used_however_many_there_are(built):
    judge, _ = built
    numbers = [10 + 7 * i for i in range(30)]
    for n in (4, 12, 30):
        question = "A shop has " + ", ".join(f"{k} boxes" for k in numbers[:n]) + ". How many?"
        lines = [f"    b{i} = {k}" for i, k in enumerate(numbers[:n])]
        total = " + ".join(f"b{i}" for i in range(n))
        all_used = "\n".join([*lines, f"    total = {total}", "    return total"])
        one_left_out = "\n".join([*lines[:-1], f"    total = {total.rsplit(' + ', 1)[0]}",
                                  "    return total"])
        scores = judge.score([question] * 2, [f'def solution():\n    """{question}"""\n{body}'
                                              for body in (all_used, one_left_out)]).reward
        assert scores[0] > 0.95 and scores[1] < 0.05, (n, scores)


def test_a_prompt_cut_at_the_front_fails(built, tmp_path):
    """Longer than max_length, the prompt loses its start (and <bos>): it cannot be checked."""
    judge, _ = built
    question = "Carla has 80 toys. She gives 32 toys to Ben. How many toys does Carla have now?"
    program = (f'def solution():\n    """{question}"""\n    toys = 80\n    given = 32\n'
               "    left = toys - given\n    return left")
    short = YoNJudge(judge.model, judge.tokenizer, delta=0.0, max_length=40)
    full, cut = judge.score([question], [program]), short.score([question], [program])
    assert full.reward[0] > 0.95 and not full.extras["truncated"][0]
    assert cut.reward[0] < 0.05 and cut.extras["truncated"][0]
