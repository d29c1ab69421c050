"""The embedded judge's build command end to end at a small size, and the checks that stop a
missing or altered judge from being used."""

import hashlib
import json
import shutil

import pytest
import torch

from rlkd_fast.checkpoint import save_model
from rlkd_fast.config import load_config
from rlkd_fast.demo import judge_artifact
from rlkd_fast.demo.build_judge import BuildSettings, vocabulary
from rlkd_fast.demo.build_judge import main as build_main
from rlkd_fast.demo.checklist_judge import checklist_judge
from rlkd_fast.demo.judge_artifact import JudgeArtifactError, embedded_judge_dir
from rlkd_fast.judges import YoNJudge
from rlkd_fast.run_inputs import load_yon_judge


@pytest.fixture(scope="module")
def small_judge(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    record = build_main(["--small", "--out", str(root / "judge"), "--no-progress",
                         "--cache-dir", str(root / "cache")])
    return root / "judge", record


def test_build_writes_a_loadable_judge_and_its_record(small_judge):
    path, record = small_judge
    on_disk = json.loads((path / "build.json").read_text())
    assert on_disk == json.loads(json.dumps(record))  # what main returned is what it wrote
    assert on_disk["command"].startswith("python -m rlkd_fast.demo.build_judge --small")
    data = on_disk["data"]
    assert data["vocab_problems"] == 16 and data["vocab"] > 10_000  # every number is a token
    assert set(on_disk["wall_seconds"]) == {"vocabulary", "construction", "check"}
    assert {"yon", "ll", "collection"} <= set(on_disk["check"])
    assert set(on_disk["files"]) >= {"model.safetensors", "config.json", "tokenizer.json",
                                    "check_pairs.jsonl"}
    assert embedded_judge_dir(path) == path
    judge = YoNJudge.from_pretrained(path, delta=0.0)
    scores = judge.score(["Ava has 3 apples."] * 2,
                         ['def solution():\n    apples = 3\n    return apples'] * 2).reward
    assert scores.shape == (2,) and bool(((scores > 0) & (scores < 1)).all())


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 64), "model.safetensors is corrupt"),
    (lambda d: (d / "tokenizer.json").write_text("{}"), "tokenizer.json is corrupt"),
    (lambda d: (d / "build.json").unlink(), "build.json is missing"),
    (lambda d: (d / "build.json").write_text("{not json"), "build.json cannot be read"),
])
def test_a_damaged_judge_names_the_file_and_the_rebuild_command(small_judge, tmp_path, damage,
                                                                message):
    copy = tmp_path / "judge"
    shutil.copytree(small_judge[0], copy)
    damage(copy)
    with pytest.raises(JudgeArtifactError, match=message) as err:
        embedded_judge_dir(copy)
    assert str(copy) in str(err.value)
    assert "python -m rlkd_fast.demo.build_judge" in str(err.value)


def test_the_trainer_refuses_a_damaged_embedded_judge(small_judge, tmp_path, monkeypatch):
    copy = tmp_path / "judge"
    shutil.copytree(small_judge[0], copy)
    (copy / "model.safetensors").unlink()
    monkeypatch.setattr(judge_artifact, "EMBEDDED_JUDGE_DIR", copy)
    with pytest.raises(JudgeArtifactError, match="rebuild it with"):
        load_yon_judge(load_config(None, ["judge=tiny"]), device=torch.device("cpu"))


def test_a_run_stops_on_a_damaged_embedded_judge_before_any_work(small_judge, tmp_path,
                                                                   monkeypatch, capsys):
    """Checked right after the data, before the student is built or trained: a clean one-line
    error (no traceback) and nothing written to output_dir."""
    from rlkd_fast.train import main

    copy = tmp_path / "judge"
    shutil.copytree(small_judge[0], copy)
    (copy / "model.safetensors").unlink()
    monkeypatch.setattr(judge_artifact, "EMBEDDED_JUDGE_DIR", copy)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        main([f"output_dir={out}", f"cache_dir={tmp_path / 'cache'}", "max_train=16",
              "max_unlabeled=8", "max_eval=4", "sft_target_accuracy=0", "progress=false"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "model.safetensors is missing" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not list(out.glob("ckpt-*"))


def test_a_rebuild_writes_the_same_weights(small_judge, tmp_path):
    """The judge is a function of the build settings: vocabulary and construction again give
    the file whose SHA-256 the record holds."""
    _, record = small_judge
    tok, constants = vocabulary(BuildSettings.small())
    save_model(checklist_judge(tok, constants), tok, tmp_path)
    digest = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert digest == record["files"]["model.safetensors"]
