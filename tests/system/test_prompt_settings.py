"""A saved policy knows how it was prompted: evaluate and judge_quality prompt it that way with no
flags, and the flags override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlkd_fast import evaluate, judge_quality
from rlkd_fast.checkpoint import save_atomic
from rlkd_fast.data import load_split, to_records
from rlkd_fast.demo.tiny import tiny_causal_lm, train_tokenizer
from rlkd_fast.prompts import PROMPT_SETTINGS_FILE, load_prompt_settings, save_prompt_settings
from rlkd_fast.train import main as train_main


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A student that learned 8 problems by heart in the header style (SFT only, ~10 s):
    (its checkpoint's policy directory, the problems' file, the run's summary)."""
    root = tmp_path_factory.mktemp("learned")
    problems = root / "eight.jsonl"
    rows = to_records(load_split("synthetic:1", split="test", size=8))
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "run"
    summary = train_main([
        f"output_dir={out}", f"cache_dir={root / 'cache'}", "stages=sft", "labeled=reft",
        f"labeled_source={problems}", "eval_dataset=reft", f"eval_source={problems}",
        "max_train=0", "max_eval=0", "sft_epochs=100", "sft_target_accuracy=0",
        "sft_batch_size=8", "sft_lr=1e-2",
        "max_new_tokens=64", "tiny_hidden=64", "tiny_layers=2", "prompt_style=header",
        "progress=false", "exec_workers=1"])
    policy = out / (out / "latest").read_text() / "policy"
    return policy, problems, summary


def evaluate_cli(policy: Path, problems: Path, *flags: str) -> float:
    results = evaluate.main(["--model", str(policy), "--datasets", "reft", "--source",
                             f"reft={problems}", "--workers", "1", "--no-progress",
                             "--device", "cpu", *flags])
    return results["reft"]["greedy_acc"]


def test_saved_policy_evaluates_at_its_training_accuracy_with_no_flags(learned, capsys):
    policy, problems, summary = learned
    assert summary["final_accuracy"] >= 0.75  # it did learn them: the comparison means something
    assert load_prompt_settings(policy) == {"prompt_style": "header", "anti_hacking": False,
                                            "max_prompt_tokens": 160, "max_new_tokens": 64}
    assert evaluate_cli(policy, problems) == summary["final_accuracy"]
    assert "prompting as" in capsys.readouterr().err
    # The flag overrides the record, and the style matters for this student.
    assert evaluate_cli(policy, problems, "--prompt-style", "reft") < summary["final_accuracy"]


def test_resolve_prompting_order(tmp_path):
    """A flag beats the record, the record beats the default."""
    save_prompt_settings(tmp_path, "header", True, 120, 50)
    settings, note = evaluate.resolve_prompting(tmp_path, max_new_tokens=7, anti_hacking=None)
    assert settings == {"prompt_style": "header", "anti_hacking": True,
                        "max_prompt_tokens": 120, "max_new_tokens": 7}
    assert "from the command line: max_new_tokens" in note
    bare, note = evaluate.resolve_prompting(tmp_path / "elsewhere")
    assert bare == evaluate.DEFAULT_PROMPTING and "records no prompt settings" in note
    hub, _ = evaluate.resolve_prompting("facebook/galactica-125m", prompt_style="header")
    assert hub["prompt_style"] == "header"


@pytest.mark.parametrize("text", ['{"prompt_style": "chat"}', '{"max_new_tokens": "96"}',
                                  '{"promptstyle": "reft"}', "[1]", "{"])
def test_bad_settings_file_is_named(tmp_path, text):
    (tmp_path / PROMPT_SETTINGS_FILE).write_text(text)
    with pytest.raises(ValueError, match=PROMPT_SETTINGS_FILE):
        load_prompt_settings(tmp_path)


def test_judge_quality_prompts_the_student_as_it_was_trained(tmp_path, monkeypatch):
    tok = train_tokenizer(["Question: Ava has 3 apples", "def solution():\n    return 3"],
                          vocab_size=280)
    student = save_atomic(tiny_causal_lm(tok, hidden_size=32, layers=1, heads=2), tok,
                        tmp_path / "student")
    save_prompt_settings(student, "header", True, 100, 5)
    seen = []

    def spy(student, tokenizer, problems, judges, executor, **kwargs):
        seen.append({k: kwargs[k] for k in ("prompt_style", "anti_hacking", "max_new_tokens",
                                             "max_prompt_length")})
        return {"collection": {"pairs": 0, "questions_seen": 0}, "judges": {}}

    monkeypatch.setattr(judge_quality, "judge_quality", spy)
    common = ["--student", str(student), "--judge", str(student), "--dataset", "synthetic",
              "--limit", "2", "--workers", "1", "--device", "cpu", "--no-progress"]
    judge_quality.main(common)
    judge_quality.main([*common, "--prompt-style", "reft", "--no-anti-hacking"])
    assert seen == [
        {"prompt_style": "header", "anti_hacking": True, "max_new_tokens": 5,
         "max_prompt_length": 100},
        {"prompt_style": "reft", "anti_hacking": False, "max_new_tokens": 5,
         "max_prompt_length": 100},
    ]
