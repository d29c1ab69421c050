"""The embedded judge's build command end to end at a small size, and the checks that stop a
missing or altered judge from being used."""

import json
import shutil

import pytest
import torch

from rlkd_fast.config import load_config
from rlkd_fast.demo import judge_artifact
from rlkd_fast.demo.build_judge import main as build_main
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
    assert on_disk["settings"]["seed"] == 0 and on_disk["settings"]["steps"] == 3
    data = on_disk["data"]
    assert data["student_samples"] == 8 * 2  # 8 questions x 2 samples of one student
    assert data["examples"] == 16 * 2 + data["student_samples"]  # gold + 1 corruption each
    assert set(on_disk["wall_seconds"]) == {"students", "examples", "teaching", "check"}
    assert {"yon", "ll", "collection"} <= set(on_disk["check"])
    assert set(on_disk["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
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
