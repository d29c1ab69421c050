"""Configuration: one coercion rule for YAML and the command line, validation before anything
loads, and a command line that answers --help and errors without importing torch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlkd_fast.config import FIELDS, TrainConfig, coerce, load_config, parse_command_line

BALANCED = ["coef_vr=0.5", "coef_yon=0.5"]
FLOATS = [name for name, f in FIELDS.items() if "float" in str(f.type)]


def train_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -X importtime -m rlkd_fast.train ARGS``: stderr holds the import log."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "rlkd_fast.train", *args],
                          capture_output=True, text=True, timeout=120,
                          env=os.environ | {"COLUMNS": "100"})


def imported(stderr: str) -> set[str]:
    """Top-level packages in a ``-X importtime`` log."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_package_and_config_import_without_torch():
    code = ("import sys, rlkd_fast, rlkd_fast.config, rlkd_fast.data; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'datasets', 'accelerate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_field_with_its_default_and_description_without_torch():
    proc = train_cli("--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not imported(proc.stderr) & {"torch", "transformers", "datasets", "accelerate"}
    text = " ".join(proc.stdout.split())  # undo the wrapping
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        default = ",".join(default) if isinstance(default, list) else str(default)
        assert f"{name}={default} " in text, name
        assert " ".join(f.metadata["help"].split()) in text, name
    assert len(FIELDS) >= 70  # the whole config, not the handful of flags


def test_config_error_answers_without_torch_and_suggests_the_nearest_key():
    proc = train_cli("rl_step=3")
    assert proc.returncode == 2
    assert "unknown config key 'rl_step' (did you mean rl_steps?)" in proc.stderr
    assert "torch" not in imported(proc.stderr)


@pytest.mark.parametrize("key, suggestion", [
    ("rl_step", "rl_steps"), ("rl_stesp", "rl_steps"), ("temprature", "temperature"),
    ("learning_rate", None), ("exec_timeout", "exec_timeout_s"),
])
def test_unknown_keys(key, suggestion):
    with pytest.raises(ValueError, match=f"unknown config key '{key}'") as err:
        load_config(None, [f"{key}=1"])
    if suggestion:
        assert f"did you mean {suggestion}" in str(err.value)
    else:
        assert "did you mean" not in str(err.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


ERROR = object()
# (key, YAML value, command-line text or None where the command line has no such value, expected)
RULE = [
    ("rl_steps", "7", "7", 7),
    ("rl_steps", "2.7", "2.7", ERROR),
    ("rl_steps", "true", "true", ERROR),
    ("sft_epochs", "10", "10", 10.0),  # an integer where a number is expected is fine
    ("sft_epochs", "2.5", "2.5", 2.5),
    ("sft_epochs", "true", "true", ERROR),
    ("rl_lr", "1.0e-5", "1e-5", 1e-5),
    ("progress", "false", "false", False),
    ("progress", "3", "3", ERROR),
    ("output_dir", "{a: 1}", None, ERROR),
    ("output_dir", "[a, b]", None, ERROR),
    ("stages", "[sft, grpo]", "sft,grpo", ["sft", "grpo"]),
    ("stages", "[sft, {a: 1}]", None, ERROR),
    ("reranker", "null", "none", None),
]


@pytest.mark.parametrize("key, yaml_value, cli_value, expected", RULE)
def test_one_coercion_rule_for_yaml_and_command_line(tmp_path, key, yaml_value, cli_value,
                                                     expected):
    path = write(tmp_path / "run.yaml", f"{key}: {yaml_value}\n")
    texts = [("yaml", yaml_value)] + ([("cli", cli_value)] if cli_value is not None else [])
    for origin, _ in texts:
        args = (path, []) if origin == "yaml" else (None, [f"{key}={cli_value}"])
        if expected is ERROR:
            with pytest.raises(ValueError) as err:
                load_config(*args)
            assert key in str(err.value)
            assert (str(path) if origin == "yaml" else "command line") in str(err.value)
        else:
            assert getattr(load_config(*args), key) == expected, origin


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_rejected_for_every_numeric_field(value):
    for name in FLOATS:
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            load_config(None, [*BALANCED, f"{name}={value}"])


def test_non_finite_yaml_number_names_the_field(tmp_path):
    path = write(tmp_path / "run.yaml", "exec_timeout_s: .inf\n")
    with pytest.raises(ValueError, match="exec_timeout_s must be finite"):
        load_config(path)
    assert coerce("exec_timeout_s", 3) == 3.0


def test_bad_yaml_and_non_utf8_files_name_the_file(tmp_path):
    bad = write(tmp_path / "bad.yaml", "rl_steps: [1\n")
    with pytest.raises(ValueError, match=rf"{bad}:2:1: not valid YAML"):
        load_config(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("output_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{latin}: not UTF-8"):
        load_config(latin)
    listing = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(ValueError, match=rf"{listing}: a config file must be a mapping"):
        load_config(listing)


def test_bad_yaml_on_the_command_line_prints_error_path(tmp_path):
    bad = write(tmp_path / "bad.yaml", "rl_steps: [1\n")
    proc = train_cli("--config", str(bad))
    assert proc.returncode == 2 and f"error: {bad}:2:1: not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, message", [
    ("device=bogus", "device must be auto, cpu, mps, cuda or cuda:N, got 'bogus'"),
    ("device=cuda:x", "device must be"),
    ("judge_device=auto", "judge_device must be cpu"),
    ("output_dir=", "output_dir must not be empty"),
    ("output_dir=  ", "output_dir must not be empty"),
    ("labeled=gsm9k", "unknown data set 'gsm9k'"),
    ("eval_source=x.jsonl", "eval_dataset=synthetic:2 is generated: eval_source must be unset"),
    ("judge_template=Is it right?", "judge_template lacks the placeholder {question}"),
])
def test_validation_catches_what_used_to_fail_later(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [*BALANCED, override])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:3", "mps"])
def test_device_syntax_accepts_the_usual_forms(device):
    assert load_config(None, [f"device={device}"]).device == device


def test_overrides_are_accepted_anywhere_among_the_arguments(tmp_path):
    path = write(tmp_path / "run.yaml", "rl_steps: 5\n")
    cfg = parse_command_line(["--resume", "rl_steps=3", "--config", str(path), "seed=2",
                              "--output-dir", str(tmp_path / "out"), "coef_vr=1", "coef_yon=0"])
    assert (cfg.resume, cfg.rl_steps, cfg.seed, cfg.coef_vr) == (True, 3, 2, 1.0)
    assert cfg.output_dir == str(tmp_path / "out")


def test_empty_output_dir_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_command_line(["--output-dir", ""])
    assert exit_.value.code == 2 and "output_dir must not be empty" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_one_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_command_line(["device=cuda:1", "judge_device=cuda"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "device=cuda:1, but torch" in err and "finds no CUDA device" in err
    assert "judge_device=cuda, but torch" in err


def test_missing_local_model_path_is_named_before_anything_loads(tmp_path, capsys):
    missing = tmp_path / "ckpt-0000600" / "policy"
    with pytest.raises(SystemExit):
        parse_command_line([f"student={missing}", "judge=./nope"])
    err = capsys.readouterr().err
    assert f"student={missing}: local path {missing} does not exist" in err
    assert "judge=./nope: local path ./nope does not exist" in err


def test_shipped_configs_describe_every_key_they_set():
    """Every key in a shipped YAML is a field (no typo hides behind a default)."""
    from rlkd_fast.config import SHIPPED, _read_yaml

    for path in SHIPPED.glob("*.yaml"):
        assert set(_read_yaml(path)) <= set(FIELDS), path
    assert TrainConfig.__doc__.count("=") >= len(FIELDS)  # help(TrainConfig) lists them too


def test_models_the_run_does_not_use_are_not_checked(tmp_path):
    cfg = parse_command_line([f"output_dir={tmp_path}", "judge=./nope", "coef_vr=1",
                              "coef_yon=0"])
    assert cfg.judge == "./nope"  # no judge in the loss: it is never loaded
