"""verifiable_reward: 1 / 0.1 / 0 in strict and ReFT modes, gold parsing, and agreement with
ReFT's own rule on real executor results."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rlkd_fast.executor import ExecResult
from rlkd_fast.rewards import parse_gold, prediction, verifiable_reward


def ok(v: float) -> ExecResult:
    return ExecResult("ok", v, "", v)


def odd(reft: float | None) -> ExecResult:
    return ExecResult("nonnumeric", None, "non-numeric result", reft)


@pytest.mark.parametrize("text,value", [
    ("1,234", 1234.0), ("203.0", 203.0), (" -7 ", -7.0), ("$5", 5.0), ("12%", 12.0),
    ("Natalia sold 72 clips.\n#### 72", 72.0), (".5", 0.5), ("1e3", 1000.0), (42, 42.0),
    (2.5, 2.5), ("1,000,000.25", 1000000.25),
])
def test_parse_gold(text, value):
    assert parse_gold(text) == value


@pytest.mark.parametrize("bad", ["None", "", "abc", "1/2", "nan", "inf", float("nan"), True,
                                 None, [3]])
def test_parse_gold_rejects(bad):
    with pytest.raises(ValueError):
        parse_gold(bad)


def test_strict_rewards():
    results = [ok(72.0), ok(72.009), ok(72.011), ok(-72.0), ExecResult("error", error="boom"),
               ExecResult("timeout", error="t"), ExecResult("crash", error="c"),
               ExecResult("infra_error", error="i"), odd(1.0), odd(float("nan")), odd(72.0)]
    gold = ["72"] * len(results)
    r = verifiable_reward(results, gold)
    assert r.dtype == torch.float32 and r.shape == (len(results),)
    assert r.tolist() == pytest.approx([1.0, 1.0, 0.1, 0.1, 0, 0, 0, 0, 0, 0, 0])
    assert verifiable_reward(results, gold, as_tensor=False) == pytest.approx(r.tolist())


def test_reft_mode_follows_float_of_the_result():
    # True counts as 1.0, "72" as 72.0, NaN/inf as numbers that are never right, None as 0.
    results = [odd(1.0), odd(72.0), odd(float("nan")), odd(float("inf")), odd(None), ok(72.0),
               ExecResult("error", error="e", reft_value=None)]
    r = verifiable_reward(results, [1, "72", "72", "72", "72", "72.0", "72"], mode="reft",
                          as_tensor=False)
    assert r == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.0, 1.0, 0.0])
    strict = verifiable_reward(results, [1, "72", "72", "72", "72", "72.0", "72"],
                               as_tensor=False)
    assert strict == pytest.approx([0, 0, 0, 0, 0, 1.0, 0])


def test_tolerance_and_errors():
    assert verifiable_reward([ok(10.4)], ["10"], tol=0.5).item() == 1.0
    assert verifiable_reward([ok(10.0)], ["10"], tol=0.0).item() == 1.0
    assert verifiable_reward([ok(10.4)], ["10"], tol=0.1).item() == pytest.approx(0.1)
    with pytest.raises(ValueError):
        verifiable_reward([ok(1.0)], ["1", "2"])
    with pytest.raises(ValueError):
        verifiable_reward([ok(1.0)], ["1"], mode="loose")
    with pytest.raises(ValueError):
        verifiable_reward([ok(1.0)], ["1"], tol=-1)
    with pytest.raises(ValueError):
        prediction(ok(1.0), "loose")
    with pytest.raises(ValueError):
        verifiable_reward([ok(1.0)], ["None"])
    # A missing label (None) can never be matched.
    assert verifiable_reward([ok(1.0), ok(2.0)], [None, "2"], as_tensor=False) == [0.0, 1.0]


def _reft_reward(result, gold: str) -> float:
    """ReFT's rule, written out: floatify, then |pred - gold| <= 1e-2 -> 1, else 0.1; None -> 0."""
    try:
        pred = float(result)
    except Exception:
        return 0.0
    return 1.0 if abs(pred - float(gold.replace(",", ""))) <= 1e-2 else 0.1


def test_random_results_agree_with_reference_rules():
    rng = random.Random(0)
    values = [rng.choice([rng.uniform(-1e4, 1e4), rng.randint(-100, 100), 0.005, True, "12",
                          "x", float("nan"), float("inf"), None, 3 + 4j, 10**30])
              for _ in range(400)]
    golds = [rng.choice(["12", "1,000", "-3.5", "0", "1"]) for _ in values]
    from rlkd_fast.pot import classify

    results = []
    for v in values:
        if v is None:
            results.append(ExecResult("error", error="e"))
            continue
        status, value, reft, err = classify(v)
        results.append(ExecResult({0: "ok", 4: "nonnumeric"}[status], value, err, reft))
    got = verifiable_reward(results, golds, mode="reft", as_tensor=False)
    want = [0.0 if v is None else _reft_reward(v, g) for v, g in zip(values, golds)]
    assert got == pytest.approx(want)
    strict = verifiable_reward(results, golds, as_tensor=False)
    for v, g, s in zip(values, golds, strict):
        numeric = (type(v) in (int, float) and math.isfinite(v) and abs(v) <= 2**53)
        want_s = _reft_reward(v, g) if numeric else 0.0
        assert s == pytest.approx(want_s), (v, g)


def test_end_to_end_with_the_executor():
    from rlkd_fast.executor import PotExecutor

    programs = ["def solution():\n    return 6 * 7\n", "def solution():\n    return 41\n",
                "def solution():\n    return 'forty-two'\n", "def solution():\n    return 1/0\n",
                "def solution():\n    return True\n"]
    with PotExecutor(workers=1, timeout_s=2.0, preload=("math",)) as ex:
        results = ex.run(programs)
    gold = ["42", "42", "42", "42", "1"]
    assert verifiable_reward(results, gold).tolist() == pytest.approx([1.0, 0.1, 0, 0, 0])
    assert verifiable_reward(results, gold, mode="reft").tolist() == pytest.approx(
        [1.0, 0.1, 0, 0, 1.0])


def _classified(v: object) -> ExecResult:
    """The result the executor reports for a program that returned ``v``."""
    from rlkd_fast.pot import classify

    status, value, reft, err = classify(v)
    return ExecResult({0: "ok", 4: "nonnumeric"}[status], value, err, reft)


def _truth_and_big_int_values():
    """(value, a gold answer its float matches) for truth values and integers beyond 2**53 of
    several libraries; each float(value) equals float(gold), so only the type rule rejects it."""
    np = pytest.importorskip("numpy")
    sympy = pytest.importorskip("sympy")
    big = 2**60
    values = [(np.True_, "1"), (np.bool_(False), "0"), (np.array(True), "1"),
              (np.int64(big + 1), str(big)), (np.uint64(big + 1), str(big)),
              (np.array(big + 1), str(big)), (sympy.Integer(big + 1), str(big)),
              (2**53 + 1, str(2**53)), (-(2**53) - 1, str(-(2**53)))]
    torch_values = [(torch.tensor(True), "1"), (torch.tensor(big + 1), str(big))]
    return values + torch_values


def test_strict_mode_rejects_truth_values_and_inexact_integers_of_any_type():
    """numpy/torch truth values and numpy/sympy/0-d integers beyond 2**53 that round to the gold
    answer used to score 1.0; as Python's bool and big ints, they are non-numeric now."""
    cases = _truth_and_big_int_values()
    for v, g in cases:
        assert float(v) == float(g), v  # the double would match
    results = [_classified(v) for v, _ in cases]
    gold = [g for _, g in cases]
    assert all(r.status == "nonnumeric" for r in results)
    assert verifiable_reward(results, gold, as_tensor=False) == [0.0] * len(cases)
    # ReFT's own rule is float(result): a truth value counts as its float, as True does
    reft = verifiable_reward(results, gold, mode="reft", as_tensor=False)
    assert reft == [1.0] * len(cases)


def test_strict_mode_keeps_exact_numbers_of_any_type():
    np = pytest.importorskip("numpy")
    sympy = pytest.importorskip("sympy")
    values = [np.int64(72), np.int32(72), np.float32(72.0), np.float64(72.0), np.array(72),
              sympy.Integer(72), sympy.Float(72.0), sympy.Rational(144, 2), torch.tensor(72),
              torch.tensor(72.0)]
    results = [_classified(v) for v in values]
    assert [r.status for r in results] == ["ok"] * len(values)
    assert verifiable_reward(results, ["72"] * len(values), as_tensor=False) == [1.0] * len(values)
    edge = [_classified(2**53), _classified(-(2**53)), _classified(np.int64(2**53))]
    assert verifiable_reward(edge, [str(2**53), str(-(2**53)), str(2**53)],
                             as_tensor=False) == [1.0, 1.0, 1.0]


def test_ok_results_made_elsewhere_obey_the_same_rule():
    """An ExecResult built by other code (another executor) with a raw numpy value."""
    np = pytest.importorskip("numpy")
    results = [ExecResult("ok", np.True_, "", 1.0), ExecResult("ok", np.int64(2**60 + 1)),
               ExecResult("ok", None), ExecResult("ok", float("nan")), ok(72.0), ok(72)]
    gold = ["1", str(2**60), "0", "0", "72", "72"]
    assert verifiable_reward(results, gold, as_tensor=False) == [0, 0, 0, 0, 1.0, 1.0]


def test_numpy_and_sympy_results_through_the_executor():
    from rlkd_fast.executor import PotExecutor

    pytest.importorskip("numpy")
    big = 2**60
    programs = [
        "def solution():\n    import numpy as np\n    return np.bool_(True)\n",
        f"def solution():\n    import numpy as np\n    return np.int64({big}) + 1\n",
        f"def solution():\n    return sympy.Integer({big}) + 1\n",
        "def solution():\n    import numpy as np\n    return np.int64(6) * 7\n",
        "def solution():\n    return sympy.Integer(6) * 7\n",
    ]
    with PotExecutor(workers=1, timeout_s=5.0, preload=("math", "sympy", "numpy"),
                     conventions="reft") as ex:
        results = ex.run(programs)
    gold = ["1", str(big), str(big), "42", "42"]
    assert [r.status for r in results] == ["nonnumeric"] * 3 + ["ok"] * 2, results
    assert verifiable_reward(results, gold, as_tensor=False) == [0, 0, 0, 1.0, 1.0]
