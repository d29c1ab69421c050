"""Loaders of rlkd_fast.data on fixtures written in each data set's real schema."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlkd_fast.data import Problem, Split, load_split, loaders, parse_answer, to_records
from rlkd_fast.data.__main__ import main as data_main


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows as .jsonl, .json (a list, as ReFT ships) or .parquet, by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


GSM8K = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A car costs $12,500 plus $1,234.", "answer": "Sum.\n#### 13,734"},
    {"question": "Half of 7?", "answer": "7/2=3.5\n#### 3.5"},
    {"question": "Broken row.", "answer": "no final answer here"},
    {"question": "Debt?", "answer": "#### -12"},
    {"question": "  ", "answer": "#### 5"},
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", 1234.0),
        ("$5", 5.0),
        ("3.50", 3.5),
        ("#### 72", 72.0),
        ("reasoning 1,000 here\n#### 1,000,000", 1e6),
        ("  -7 ", -7.0),
        ("+8", 8.0),
        ("50%", 50.0),
        ("12.", 12.0),
        (".5", 0.5),
        ("3/4", 0.75),
        ("$1,234.50", 1234.5),
        ("203.0", 203.0),
        (42, 42.0),
        (2.5, 2.5),
        ("None", None),
        ("", None),
        ("twelve", None),
        ("1/0", None),
        ("12 apples", None),
        ("1, 2", None),
        ("nan", None),
        (float("inf"), None),
        (True, None),
        (None, None),
    ],
)
def test_parse_answer(text, expected):
    got = parse_answer(text)
    assert got == expected and (got is None) == (expected is None)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_gsm8k_file_skips_unparseable_rows_and_reports_them(tmp_path, suffix):
    path = write(tmp_path / f"test{suffix}", GSM8K)
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 rows.*row 3"):
        got = load_split("gsm8k", str(path))
    assert got.skipped == 2 and got.dropped == 0
    assert [p.answer for p in got] == [7.0, 13734.0, 3.5, -12.0]
    assert [p.question for p in got] == [r["question"] for r in GSM8K[:3] + GSM8K[4:5]]
    assert all(isinstance(p, Problem) and p.program is None for p in got)
    assert len({p.id for p in got}) == 4


def test_directory_picks_the_split_file_and_concatenates_shards(tmp_path):
    write(tmp_path / "main" / "train-00000-of-00001.parquet", GSM8K[:1])
    write(tmp_path / "main" / "test-00000-of-00002.parquet", GSM8K[1:3])
    write(tmp_path / "main" / "test-00001-of-00002.parquet", GSM8K[4:5])
    test = load_split("gsm8k", str(tmp_path), split="test")
    assert [p.answer for p in test] == [13734.0, 3.5, -12.0] and test.skipped == 0
    train = load_split("gsm8k", str(tmp_path), split="train")
    assert [p.answer for p in train] == [7.0]
    with pytest.raises(FileNotFoundError, match="validation"):
        load_split("gsm8k", str(tmp_path), split="validation")


@pytest.fixture
def hub_reachable(monkeypatch):
    """The hub answers the reachability probe (the tests fake ``load_dataset`` itself)."""
    monkeypatch.setattr(loaders, "network_error", lambda *a, **k: None)
    monkeypatch.setattr(loaders, "offline_mode", lambda: False)


def test_hub_id_goes_through_load_dataset_and_the_same_parser(monkeypatch, hub_reachable):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return list(GSM8K)

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.warns(UserWarning, match="skipped 2"):
        got = load_split("gsm8k")
    assert calls == [("openai/gsm8k", "main", "test")]
    assert [p.answer for p in got] == [7.0, 13734.0, 3.5, -12.0]
    monkeypatch.setattr(
        datasets, "load_dataset", lambda p, n=None, split=None: calls.append((p, n, split)) or []
    )
    load_split("gsm_symbolic", config="p2")
    load_split("gsm8k_aug", split="train")
    load_split("svamp")
    assert calls[-3:] == [
        ("apple/GSM-Symbolic", "p2", "test"),
        ("whynlp/gsm8k-aug", None, "train"),
        ("ChilleD/SVAMP", None, "test"),
    ]


def test_hub_failure_is_a_clear_error(monkeypatch, hub_reachable):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"qintongli/GSM-Plus.*local path"):
        load_split("gsm_plus")


def test_unreachable_hub_fails_at_once_naming_the_option(monkeypatch):
    """One probe without retries decides; load_dataset (25 s of retries) is never called."""
    import datasets

    def never(*a, **k):
        raise AssertionError("load_dataset called although the hub is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.setattr(loaders, "offline_mode", lambda: False)
    monkeypatch.setattr(loaders, "network_error", lambda *a, **k: "ConnectError: refused")
    with pytest.raises(loaders.HubUnreachable, match=r"'openai/gsm8k'.*refused.*eval_source="):
        load_split("gsm8k", source_option="eval_source=")


def test_offline_mode_without_a_cached_copy_names_the_option(monkeypatch):
    import datasets

    def cache_miss(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", cache_miss)
    monkeypatch.setattr(loaders, "offline_mode", lambda: True)
    monkeypatch.setattr(loaders, "network_error", lambda *a, **k: pytest.fail("probed offline"))
    with pytest.raises(loaders.HubUnreachable, match=r"HF_HUB_OFFLINE.*not in the local cache.*"
                                                  r"labeled_source="):
        load_split("gsm8k", source_option="labeled_source=")


@pytest.mark.parametrize("env", [{"HF_ENDPOINT": "http://127.0.0.1:9"}, {"HF_HUB_OFFLINE": "1"}])
def test_data_cli_without_the_hub_answers_at_once(tmp_path, env):
    """Offline, ``python -m rlkd_fast.data gsm8k`` used to wait ~25 s and end in a traceback."""
    base = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env = base | {"HF_HOME": str(tmp_path / "hf")} | env
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rlkd_fast.data", "gsm8k"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 15
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--source PATH" in proc.stderr and "openai/gsm8k" in proc.stderr


def test_missing_file_and_missing_field_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_split("gsm8k", str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl"):
        load_split("gsm8k", str(tmp_path))
    path = write(tmp_path / "x.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q"}])
    with pytest.raises(KeyError, match=r"gsm8k/test: row 1 has no field 'answer'"):
        load_split("gsm8k", str(path))
    path = write(tmp_path / "r.json", [{"item_id": "a", "question": "q", "answer": "1"}])
    with pytest.raises(KeyError, match="answer_value"):
        load_split("reft", str(path))
    with pytest.raises(ValueError, match="no default source"):
        load_split("reft")
    with pytest.raises(ValueError, match="unknown data set"):
        load_split("gsm9k")
    with pytest.raises(ValueError, match="unknown config 'p3'"):
        load_split("gsm_symbolic:p3")


def test_missing_source_message_names_the_callers_option():
    with pytest.raises(ValueError, match=r"reft: no default source.*with --source PATH"):
        load_split("reft", source_option="--source PATH")
    with pytest.raises(ValueError, match=r"labeled_source= must be unset"):
        load_split("synthetic", "x.jsonl", source_option="labeled_source=")
    proc = subprocess.run([sys.executable, "-m", "rlkd_fast.data", "reft"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "--source PATH" in proc.stderr
    assert "source=" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name, text, where, kind", [
    ("nums.json", "[1, 2, 3]", "nums.json: record 0", "a number"),
    ("mixed.json", '[{"question": "q", "answer": "#### 1"}, "x"]', "mixed.json: record 1",
     "a string"),
    ("wrapped.json", '{"data": [[1, 2]]}', "wrapped.json: record 0", "an array"),
    ("lines.jsonl", '{"question": "q", "answer": "#### 1"}\n"just text"\n', "lines.jsonl:2",
     "a string"),
    ("lines.jsonl", '\n[1, 2]\n', "lines.jsonl:2", "an array"),
])
def test_rows_that_are_not_json_objects_name_the_file_and_row(tmp_path, name, text, where, kind):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{where}: expected a JSON object.*got {kind}"):
        load_split("gsm8k", str(path))


def test_non_utf8_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"test.jsonl:2: not UTF-8 text"):
        load_split("gsm8k", str(path))


def test_bad_json_reports_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2"):
        load_split("gsm8k", str(path))


PROGRAM = 'def solution():\n    """Q"""\n    a = 3\n    result = a\n    return result'


def reft_dir(root: Path) -> Path:
    """ReFT's data/ directory: PoT train files and test files for GSM8K and SVAMP."""
    write(
        root / "gsm8k_python_sdp.json",
        [
            {"item_id": "gsm8k_0", "question": "Q", "answer_cot": PROGRAM, "answer_value": "3"},
            {"item_id": "gsm8k_1", "question": "R", "answer_cot": PROGRAM, "answer_value": "x"},
        ],
    )
    write(
        root / "svamp_python_sdp.json",
        [{"item_id": "svamp_0", "question": "S", "answer_cot": PROGRAM, "answer_value": "203.0"}],
    )
    write(root / "gsm8k_test_set.json", [{"item_id": "t0", "question": "T", "answer_value": "72"}])
    write(
        root / "svamp_test_set.json", [{"item_id": "s0", "question": "U", "answer_value": "14.0"}]
    )
    nl = {"item_id": "n0", "question": "V", "answer_cot": "Nine.", "answer_value": "9"}
    write(root / "svamp_nl.json", [nl])
    return root


def test_reft_and_svamp_files(tmp_path):
    root = reft_dir(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        train = load_split("reft", str(root), split="train")
    assert train == [Problem("gsm8k_0", "Q", 3.0, PROGRAM)] and train.skipped == 1
    assert load_split("reft", str(root)) == [Problem("t0", "T", 72.0)]
    assert load_split("reft:svamp", str(root), split="train") == [
        Problem("svamp_0", "S", 203.0, PROGRAM)
    ]
    assert load_split("svamp", str(root)) == [Problem("s0", "U", 14.0)]
    nl = load_split("svamp", str(root / "svamp_nl.json"))
    assert nl == [Problem("n0", "V", 9.0, None)]  # a CoT text is not a program


def test_svamp_hub_schema(tmp_path):
    rows = [
        {"ID": "chal-1", "Body": "Ed has 5 pens .", "Question": "How many ?", "Answer": 5.0},
        {"ID": "chal-2", "Body": "x", "Question": "y", "Answer": None},
    ]
    with pytest.warns(UserWarning, match="skipped 1"):
        got = load_split("svamp", str(write(tmp_path / "test.parquet", rows)))
    assert got == [Problem("chal-1", "Ed has 5 pens . How many ?", 5.0)]


def test_gsm_plus_drops_none_answers_without_counting_them_as_skipped(tmp_path):
    rows = [
        {"question": "a", "solution": "...", "answer": "12", "perturbation_type": "numerical"},
        {"question": "b", "solution": "...", "answer": "None", "perturbation_type": "critical"},
        {"question": "c", "solution": "...", "answer": "1,050.5", "perturbation_type": "x"},
        {"question": "d", "solution": "...", "answer": "about ten", "perturbation_type": "y"},
    ]
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        got = load_split("gsm_plus", str(write(tmp_path / "test.jsonl", rows)))
    assert [(p.question, p.answer) for p in got] == [("a", 12.0), ("c", 1050.5)]
    assert got.dropped == 1 and got.skipped == 1


def test_gsm_symbolic_configs(tmp_path):
    for config, n in (("main", 3), ("p1", 2), ("p2", 1)):
        rows = [
            {
                "id": k,
                "instance": 7,
                "question": f"{config}{k}",
                "answer": f"so\n#### {k + n}",
                "original_id": 1,
            }
            for k in range(n)
        ]
        write(tmp_path / config / "test-00000-of-00001.parquet", rows)
    for name, kw in (("gsm_symbolic:p1", {}), ("gsm_symbolic", {"config": "p1"})):
        got = load_split(name, str(tmp_path), **kw)
        assert [(p.question, p.answer) for p in got] == [("p10", 2.0), ("p11", 3.0)]
        assert got[1].id == "gsm_symbolic:p1/test/1/7"
    assert [p.answer for p in load_split("gsm_symbolic", str(tmp_path))] == [3.0, 4.0, 5.0]
    assert len(load_split("gsm_symbolic:p2", str(tmp_path))) == 1
    (tmp_path / "p2" / "test-00000-of-00001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="no file for config 'p2'"):
        load_split("gsm_symbolic:p2", str(tmp_path))  # never silently the main config


def test_gsm8k_aug_is_question_only_and_fraction_subsets_are_deterministic(tmp_path):
    rows = [
        {"question": f"q{i}", "steps": ["<<1+1=2>>"], "answer": "2" if i % 3 else "??"}
        for i in range(200)
    ]
    path = str(write(tmp_path / "train.jsonl", rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the answer is ignored, so nothing is skipped
        full = load_split("gsm8k_aug", path, split="train")
    assert len(full) == 200 and full.skipped == 0
    assert all(p.answer is None and p.program is None for p in full)
    five = load_split("gsm8k_aug", path, split="train", fraction=0.05, seed=3)
    quarter = load_split("gsm8k_aug", path, split="train", fraction=0.25, seed=3)
    assert len(five) == 10 and len(quarter) == 50
    assert five == load_split("gsm8k_aug", path, split="train", fraction=0.05, seed=3)
    assert {p.id for p in five} < {p.id for p in quarter}  # nested subsets
    assert five != load_split("gsm8k_aug", path, split="train", fraction=0.05, seed=4)
    order = [int(p.question[1:]) for p in quarter]
    assert order == sorted(order)  # original order kept
    for bad in (0.0, -0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="fraction"):
            load_split("gsm8k_aug", path, split="train", fraction=bad)


def test_synthetic_through_load_split():
    train = load_split("synthetic", split="train", size=30, seed=1)
    assert isinstance(train, Split) and len(train) == 30
    assert all(p.answer is not None and p.program for p in train)
    unlabeled = load_split("synthetic", split="unlabeled", size=10, seed=1)
    assert all(p.answer is not None and p.program is None for p in unlabeled)
    assert len(load_split("synthetic", split="test", size=40, fraction=0.25)) == 10
    with pytest.raises(ValueError, match="source"):
        load_split("synthetic", "some/path")


def test_synthetic_config_sets_max_steps_and_records_round_trip(tmp_path, capsys):
    easy = load_split("synthetic:1", split="train", size=50)
    assert all(sum(f" {op} " in p.program for op in "+-*/") == 1 for p in easy)
    with pytest.raises(ValueError, match="max_steps"):
        load_split("synthetic:hard")
    out = tmp_path / "syn.jsonl"
    data_main(["synthetic", "--split", "test", "--size", "7", "--show", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "synthetic/test: 7 problems, 0 skipped" in printed and "def solution():" in printed
    back = load_split("reft", str(out))
    assert back == load_split("synthetic", split="test", size=7) and back.skipped == 0
    unlabeled = load_split("synthetic", split="unlabeled", size=3)
    path = write(tmp_path / "q.jsonl", to_records(unlabeled))
    # gsm8k_aug reads questions only: the monitoring answers stay behind
    assert load_split("gsm8k_aug", str(path)) == [Problem(p.id, p.question) for p in unlabeled]


def test_split_survives_pickling():
    import pickle

    split = Split([Problem("a", "q", 1.0)], "gsm8k", "src", skipped=2, dropped=1)
    again = pickle.loads(pickle.dumps(split))
    assert again == split and (again.skipped, again.dropped, again.name) == (2, 1, "gsm8k")
