"""Evaluation counts on a scripted student whose generations are known, and the CLI end to end."""

import json

import pytest
import torch
from transformers import GenerationConfig

from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.data import Problem
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.evaluate import (
    completions_to_programs,
    evaluate,
    format_table,
    main,
    majority_vote,
    parse_datasets,
    parse_sources,
)
from rlkd_fast.executor import PotExecutor


class ScriptedLM(torch.nn.Module):
    """A stand-in student: ``generate`` answers each prompt with scripted completions.

    ``script[question]`` holds ``"greedy"`` (one completion) and ``"samples"`` (what sampling
    returns, in order). The question is read back from the prompt tokens, so the rollout's
    padding, sorting and row order are exercised for real.
    """

    def __init__(self, tokenizer, script: dict[str, dict]):
        super().__init__()
        self.tok, self.script = tokenizer, script
        self.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                                  pad_token_id=tokenizer.pad_token_id)
        self.calls: list[tuple[int, int]] = []  # (prompt rows, samples per prompt)
        self.prompts: list[str] = []

    def generate(self, input_ids, attention_mask, do_sample=False, num_return_sequences=1,
                 **kwargs):
        self.calls.append((input_ids.shape[0], num_return_sequences if do_sample else 0))
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tok.decode(ids[mask.bool()])
            self.prompts.append(prompt)
            # "Question:\n{q}\n..." (ReFT) or 'def solution():\n    """{q}"""\n' (header)
            question = prompt.split("\n")[1].strip().strip('"')
            entry = self.script[question]
            texts = entry["samples"][:num_return_sequences] if do_sample else [entry["greedy"]]
            assert len(texts) == num_return_sequences
            for text in texts:
                rows.append(ids.tolist() + self.tok.encode(text) + [self.tok.eos_token_id])
        width = max(map(len, rows))
        return torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])


def body(*lines: str) -> str:
    return "".join(f"    {line}\n" for line in lines)


FAIL = body("x = 0", "return 1 / x")
# Hand-checked: greedy right on q1, q4 (within 1e-2), q5 (code after the blank line is cut);
# votes (4 samples): q1 tie 7/8 -> 7 first (wrong), q2 tie 6/5 -> 6 (right), q3 failures do not
# vote -> 10 (right), q4 nothing runs (wrong), q5 3 beats 4 (wrong).
SCRIPT = {
    "Ann has 3 red and 5 blue pens. How many pens?": dict(
        answer=8, greedy=body("a = 3", "b = 5", "total = a + b", "return total"),
        samples=[body("return 7"), body("return 8"), body("return 8.0"), body("return 7.0")]),
    "Bo eats 2 of 8 plums. How many are left?": dict(
        answer=6, greedy=body("return 5"),
        samples=[body("return 6"), body("return 5"), body("return 5"), body("return 6")]),
    "Cy saves 5 coins a day for 2 days. How many coins?": dict(
        answer=10, greedy=FAIL,
        samples=[FAIL, body("return 10"), FAIL, body("return 9")]),
    "Di splits 5 cakes between 2 kids. How much each?": dict(
        answer=2.5, greedy=body("return 2.504"),
        samples=[FAIL, FAIL, body("return 'x'"), FAIL]),
    "Ed has 2 boxes of 2 toys. How many toys?": dict(
        answer=4, greedy=body("t = 2 * 2", "return t") + "\n    return 1 / 0\n",
        samples=[body("return 4"), body("return 3"), body("return 3"), body("return 3")]),
}
PROBLEMS = [Problem(f"p{i}", q, float(s["answer"])) for i, (q, s) in enumerate(SCRIPT.items())]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [q for q in SCRIPT] + [s["greedy"] for s in SCRIPT.values()]
    return train_tokenizer(texts + [t for s in SCRIPT.values() for t in s["samples"]],
                           vocab_size=300)


@pytest.fixture(scope="module")
def executor():
    with PotExecutor(workers=1, timeout_s=5.0, conventions="reft") as ex:
        yield ex


def test_majority_vote_rules():
    assert majority_vote([None, 3.0, 4.0, 4.0, 3.0]) == 3.0  # tie: first seen wins
    assert majority_vote([None, 2.0, 5.0, 5.0, 2.0, 5.0]) == 5.0
    assert majority_vote([0.1 + 0.2, 0.3, 1.0]) == pytest.approx(0.3)  # rounding groups them
    assert majority_vote([1.0, 0.1 + 0.2, 0.3], digits=None) == 1.0  # exact: three singletons
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_evaluate_counts_match_hand_check(tokenizer, executor):
    model = ScriptedLM(tokenizer, SCRIPT)
    out = evaluate(model, tokenizer, PROBLEMS, vote=4, executor=executor, batch_size=3,
                   return_records=True)
    assert out["n"] == 5
    assert [r["correct"] for r in out["records"]] == [True, False, False, True, True]
    assert out["greedy_correct"] == 3 and out["greedy_acc"] == pytest.approx(0.6)
    assert out["executed"] == 4
    assert [r["vote_prediction"] for r in out["records"]] == [7.0, 6.0, 10.0, None, 3.0]
    assert out["vote_correct"] == 2 and out["vote_acc"] == pytest.approx(0.4)
    # Responses under 4 lines: q2 (1), q3 (2), q4 (1); q5 is cut to 2 lines; q1 has 4.
    assert out["short_share"] == pytest.approx(4 / 5)
    assert out["records"][4]["program"].endswith("return t")
    # Greedy: 5 prompts in calls of at most batch_size; vote: 4 samples of one prompt per call
    # (batch_size counts rows, and one prompt's samples are never split).
    assert sorted(model.calls) == [(1, 4)] * 5 + [(2, 0), (3, 0)]
    # Chunked generation (with execution overlapping it) gives the same results.
    chunked = evaluate(model, tokenizer, PROBLEMS, vote=4, executor=executor, chunk=2,
                       return_records=True)
    assert {k: v for k, v in chunked.items() if k != "seconds"} == {
        k: v for k, v in out.items() if k != "seconds"}


def test_prompt_styles(tokenizer, executor):
    """The student is prompted in the style it was trained with; the programs are the same."""
    results = {}
    for style in ("reft", "header"):
        model = ScriptedLM(tokenizer, SCRIPT)
        out = evaluate(model, tokenizer, PROBLEMS, executor=executor, prompt_style=style,
                       return_records=True)
        results[style] = [(r["program"], r["correct"]) for r in out["records"]]
        starts = {p.split("\n", 1)[0] for p in model.prompts}
        assert starts == {"Question:" if style == "reft" else "def solution():"}, starts
    assert results["header"] == results["reft"]
    assert [c for _, c in results["reft"]] == [True, False, False, True, True]
    with pytest.raises(ValueError, match="prompt style"):
        evaluate(ScriptedLM(tokenizer, SCRIPT), tokenizer, PROBLEMS, executor=executor,
                 prompt_style="chat")


def test_evaluate_rejects_unlabeled_and_empty(tokenizer, executor):
    model = ScriptedLM(tokenizer, SCRIPT)
    with pytest.raises(ValueError, match="no gold answer"):
        evaluate(model, tokenizer, [Problem("u", PROBLEMS[0].question)], executor=executor)
    with pytest.raises(ValueError, match="no problems"):
        evaluate(model, tokenizer, [], executor=executor)


def test_completions_to_programs_layout():
    problems = [Problem("a", "Q one"), Problem("b", "Q two")]
    progs = completions_to_programs(["    return 1\n", "    return 2\n\njunk", "    return 3",
                                     "    return 4"], problems, num_samples=2)
    assert progs[1] == 'def solution():\n    """Q one"""\n    return 2'
    assert progs[2].startswith('def solution():\n    """Q two"""')
    with pytest.raises(ValueError, match="completions"):
        completions_to_programs(["x"], problems)


def test_dataset_and_source_parsing():
    assert parse_datasets("gsm8k,svamp,gsm_plus,gsm_symbolic:main,p1,p2") == [
        "gsm8k", "svamp", "gsm_plus", "gsm_symbolic:main", "gsm_symbolic:p1", "gsm_symbolic:p2"]
    assert parse_datasets("gsm_symbolic:p1, gsm8k ,") == ["gsm_symbolic:p1", "gsm8k"]
    assert parse_sources(["gsm8k=/a/b.jsonl", "gsm_symbolic:p1=x"]) == {
        "gsm8k": "/a/b.jsonl", "gsm_symbolic:p1": "x"}
    with pytest.raises(ValueError, match="name=path"):
        parse_sources(["gsm8k"])
    with pytest.raises(ValueError, match="no data sets"):
        parse_datasets(" , ")
    table = format_table({"gsm8k": dict(n=4, greedy_acc=0.25, executed=2, short_share=0.5,
                                        vote_acc=0.5)})
    assert "25.00" in table and "50.0" in table and "gsm8k" in table


def test_cli_end_to_end(tmp_path, capsys):
    rows = [{"question": q, "answer": f"Reasoning here.\n#### {s['answer']}"}
            for q, s in SCRIPT.items()]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_tokenizer([r["question"] for r in rows] + [SCRIPT[q]["greedy"] for q in SCRIPT],
                          vocab_size=300)
    model_dir = save_atomic(tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2), tok,
                          tmp_path / "student")
    out = tmp_path / "res" / "results.json"
    results = main(["--model", str(model_dir), "--datasets", "gsm8k", "--source",
                    f"gsm8k={data}", "--limit", "3", "--vote", "2", "--max-new-tokens", "6",
                    "--workers", "1", "--timeout", "2", "--out", str(out), "--no-progress",
                    "--device", "cpu"])
    saved = json.loads(out.read_text())
    assert saved["results"]["gsm8k"]["n"] == 3 == results["gsm8k"]["n"]
    assert set(saved["results"]["gsm8k"]) >= {"greedy_acc", "vote_acc", "executed", "short_share"}
    assert "gsm8k" in capsys.readouterr().out


def test_progress_bar_counts_programs_batch_by_batch(tokenizer, executor, monkeypatch):
    """The bar moves after every generate call, not once per chunk of the whole data set."""
    import rlkd_fast.evaluate as evaluation

    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.updates = total, []
            bars.append(self)

        def update(self, n):
            self.updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(evaluation, "tqdm", Bar)
    model = ScriptedLM(tokenizer, SCRIPT)
    evaluate(model, tokenizer, PROBLEMS, vote=4, executor=executor, batch_size=2, progress=True)
    (bar,) = bars
    # 5 greedy programs in calls of 2 rows, then 4 samples of one problem per call.
    assert bar.total == 5 * (1 + 4) and sum(bar.updates) == bar.total
    assert bar.updates == [2, 2, 1] + [4] * 5


@pytest.fixture
def hf_bars():
    """Hugging Face's own bars on (another test may have switched them off), and back after."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


def test_no_progress_also_silences_the_weight_loading_bar(tmp_path, capsys, hf_bars):
    rows = [{"question": q, "answer": f"#### {s['answer']}"} for q, s in SCRIPT.items()]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_tokenizer(list(SCRIPT), vocab_size=300)
    model_dir = save_atomic(tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2), tok,
                          tmp_path / "student")
    args = ["--model", str(model_dir), "--datasets", "gsm8k", "--source", f"gsm8k={data}",
            "--limit", "2", "--max-new-tokens", "4", "--workers", "1", "--device", "cpu"]
    capsys.readouterr()
    main(args)
    shown = capsys.readouterr().err
    assert "Loading" in shown and "evaluate" in shown  # the bars this flag is about
    main([*args, "--no-progress"])
    quiet = capsys.readouterr().err
    assert "Loading" not in quiet and "%|" not in quiet
