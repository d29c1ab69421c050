"""The verifiable reward: run the program, compare its answer with the label.

``verifiable_reward(results, gold)`` gives, per program (paper Eq. 1, ReFT):

* 1.0 when the program's answer is within ``tol`` of the gold answer (``|pred - gold| <= tol``);
* 0.1 when it ran and returned a number that is wrong;
* 0.0 when it failed, timed out, crashed or returned no number.

Two modes decide what "a number" is:

* ``"strict"`` (default): only ``ExecResult.status == "ok"`` counts: truth values of any type
  (``bool``, ``numpy.bool_``, boolean arrays and tensors), str, NaN, inf, complex and integers of
  any type (``int``, numpy, sympy) beyond 2**53, which a double cannot hold exactly, are
  non-numeric (0.0). See ``rlkd_fast.pot.classify``, applied where the program ran and again
  here to the value of an ``ok`` result (so results made by other code obey the same rule).
* ``"reft"``: ReFT's rule, ``float(result)`` when that works (``ExecResult.reft_value``): so
  ``True`` counts as 1.0, ``"12"`` as 12.0, and NaN/inf as numbers that are never correct (0.1).

Gold answers may be numbers or strings such as ``"1,234"``, ``"203.0"``, ``" -7 "``, ``"$5"``,
``"12%"`` or GSM8K's ``"... #### 42"``; an unparsable gold answer raises ``ValueError``.
A gold answer of ``None`` (an unlabeled row) gives 0.0: nothing can match a missing label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from rlkd_fast.executor import ExecResult
from rlkd_fast.pot import OK, classify

CORRECT, WRONG_NUMBER, FAILED = 1.0, 0.1, 0.0
MODES = ("strict", "reft")


def parse_gold(gold: str | float | int) -> float:
    """A gold answer as a float: ``"1,234"`` -> 1234.0, ``"#### 42"`` -> 42.0."""
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        raise ValueError(f"gold answer must be a number or a string, got {gold!r}")
    if isinstance(gold, (int, float)):
        value = float(gold)
    else:
        text = gold.split("####")[-1].strip().replace(",", "").replace("$", "").rstrip("%")
        if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text.strip()):
            raise ValueError(f"cannot parse gold answer {gold!r} as a number")
        value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"gold answer {gold!r} is not finite")
    return value


def prediction(result: ExecResult, mode: str = "strict") -> float | None:
    """The number a result counts as under ``mode``, or None."""
    if mode == "strict":
        if result.status != "ok":
            return None
        status, value, _, _ = classify(result.value)  # a float from the executor: as it is
        return value if status == OK else None
    if mode == "reft":
        return result.reft_value if result.status in ("ok", "nonnumeric") else None
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def verifiable_reward(results: Sequence[ExecResult], gold: Sequence[str | float | int | None],
                      tol: float = 1e-2, mode: str = "strict",
                      as_tensor: bool = True) -> torch.Tensor | list[float]:
    """Rewards 1.0 / 0.1 / 0.0 for ``results[i]`` against ``gold[i]``.

    Args:
        results: ``ExecResult`` per program (from ``PotExecutor.run``).
        gold: the labels, numbers or strings (see ``parse_gold``), None for no label;
            same length.
        tol: absolute tolerance of a correct answer.
        mode: ``"strict"`` or ``"reft"`` (see the module docstring).
        as_tensor: return a float32 tensor [N] (default) or a list of floats.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if len(results) != len(gold):
        raise ValueError(f"{len(results)} results but {len(gold)} gold answers")
    if not tol >= 0:
        raise ValueError("tol must be >= 0")
    rewards = []
    for res, g in zip(results, gold):
        target = None if g is None else parse_gold(g)
        pred = prediction(res, mode)
        if pred is None or target is None:
            rewards.append(FAILED)
        else:
            rewards.append(CORRECT if abs(pred - target) <= tol else WRONG_NUMBER)
    return torch.tensor(rewards, dtype=torch.float32) if as_tensor else rewards
