"""A run's data and models are checked before training: every split the run needs is read and
checked before any model loads, errors name the setting and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlkd_fast import run_inputs
from rlkd_fast.config import load_config
from rlkd_fast.data import loaders
from rlkd_fast.run_inputs import DataError, load_data

GOOD = [{"question": f"Q{i}?", "answer": f"#### {i}"} for i in range(3)]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_with(*overrides: str):
    base = ["max_train=8", "max_unlabeled=8", "max_eval=4", "labeled=synthetic:1",
            "unlabeled=synthetic:1", "eval_dataset=synthetic:1", "sft_target_accuracy=0"]
    return load_config(None, [*base, *overrides])


@pytest.mark.parametrize("text, why", [
    ("", "it holds no rows"),
    ("\n\n  \n", "it holds no rows"),
    ("".join(json.dumps({"question": "q", "answer": a}) + "\n" for a in ("x", "", "12 eggs")),
     "all 3 rows were skipped"),
])
def test_unusable_evaluation_set_names_setting_and_file(tmp_path, text, why):
    path = tmp_path / "test.jsonl"
    path.write_text(text)
    cfg = cfg_with("eval_dataset=gsm8k", f"eval_source={path}")
    with pytest.raises(DataError) as err:
        load_data(cfg)
    assert f"eval_dataset=gsm8k (eval_source={path}, eval_split=test)" in str(err.value)
    assert why in str(err.value)


def test_row_that_is_not_an_object_names_setting_file_and_line(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", [*GOOD, ["not", "a", "record"]])
    cfg = cfg_with("labeled=gsm8k", f"labeled_source={path}", "stages=grpo", "coef_vr=1",
                   "coef_yon=0")
    with pytest.raises(DataError, match=rf"labeled=gsm8k \(labeled_source={path}, "
                                        rf"labeled_split=train\): {path}:4: expected a JSON "
                                        "object"):
        load_data(cfg)


def test_missing_data_file_names_the_setting(tmp_path):
    cfg = cfg_with("eval_dataset=gsm8k", f"eval_source={tmp_path / 'nope.jsonl'}")
    with pytest.raises(DataError, match=r"eval_dataset=gsm8k .*no such data file.*nope\.jsonl"):
        load_data(cfg)


def test_unreachable_hub_names_the_config_key(monkeypatch):
    monkeypatch.setattr(loaders, "offline_mode", lambda: False)
    monkeypatch.setattr(loaders, "network_error", lambda *a, **k: "ConnectError: refused")
    cfg = cfg_with("unlabeled=gsm8k_aug", "unlabeled_split=train")
    with pytest.raises(DataError, match=r"whynlp/gsm8k-aug.*with unlabeled_source="):
        load_data(cfg)


def test_only_the_splits_the_run_uses_are_read(tmp_path):
    """No judge in the loss: the unlabeled set is never read (a missing file is no error)."""
    cfg = cfg_with("unlabeled=gsm8k_aug", f"unlabeled_source={tmp_path / 'absent.jsonl'}",
                   "coef_vr=1", "coef_yon=0")
    run = load_data(cfg)
    assert run.unlabeled == [] and len(run.labeled) == 8 and len(run.test) == 4
    with pytest.raises(DataError, match="unlabeled=gsm8k_aug"):
        load_data(cfg_with("unlabeled=gsm8k_aug",
                           f"unlabeled_source={tmp_path / 'absent.jsonl'}"))


def test_bad_evaluation_set_stops_the_trainer_before_any_model_loads(tmp_path, monkeypatch,
                                                                     capsys):
    from rlkd_fast.train import main

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    for name in ("resolve_student", "load_policy", "load_yon_judge", "open_executor"):
        monkeypatch.setattr(run_inputs, name, refuse)
    empty = tmp_path / "test.jsonl"
    empty.write_text("\n")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main([f"output_dir={out}", "eval_dataset=gsm8k", f"eval_source={empty}",
              "max_train=8", "progress=false"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"error: eval_dataset=gsm8k (eval_source={empty}, eval_split=test): no usable" in err
    assert not out.exists() or not any(out.iterdir())


def test_missing_local_model_path_says_so(tmp_path):
    """Not Hugging Face's "Repo id must be in the form ..." error."""
    from rlkd_fast.models import load_causal_lm

    missing = tmp_path / "runs" / "default" / "ckpt-0000600" / "policy"
    for name in (str(missing), "runs/default/ckpt-0000600/policy", "./policy", "~/nope/model"):
        with pytest.raises(FileNotFoundError, match=r"local path .* does not exist"):
            load_causal_lm(name, device="cpu")


def test_evaluate_cli_names_a_missing_model_before_loading_anything(capsys):
    from rlkd_fast import evaluate

    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--model", "runs/default/ckpt-0000600/policy", "--datasets", "synthetic"])
    assert exit_.value.code == 2
    assert "--model: local path runs/default/ckpt-0000600/policy does not exist" in \
        capsys.readouterr().err


def test_judge_quality_cli_names_missing_models(capsys):
    from rlkd_fast import judge_quality

    with pytest.raises(SystemExit):
        judge_quality.main(["--student", "./student", "--judge", "runs/x/ckpt/policy"])
    err = capsys.readouterr().err
    assert "--student: local path ./student does not exist" in err
    assert "--judge: local path runs/x/ckpt/policy does not exist" in err
