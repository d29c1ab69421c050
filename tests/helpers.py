"""Helpers the tests import (``from helpers import ...``): the device, the repository's root, the
comparison of a result with a float64 reference, and trusted programs run in-process."""

from pathlib import Path
from types import SimpleNamespace

import torch

from rlkd_fast import pot

#: Kernel tests make tensors here: the GPU where there is one (compiled kernels), else the CPU
#: (the Triton interpreter).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: The repository's root (benchmarks/, setup.py).
REPO = Path(__file__).resolve().parent.parent


def assert_matches(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float,
                   dtype: torch.dtype = torch.float32, equal_nan: bool = False) -> None:
    """``got`` has ``dtype`` and ``want``'s shape and matches the float64 ``want`` elementwise."""
    assert got.dtype == dtype, f"dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol,
                               equal_nan=equal_nan)


_STATUS = {pot.OK: "ok", pot.ERROR: "error", pot.NONNUMERIC: "nonnumeric"}


def run_here(programs: list[str]) -> list[SimpleNamespace]:
    """An in-process stand-in for ``PotExecutor.run`` (for the tests' own, trusted programs)."""
    out = []
    for p in programs:
        status, value, _, _ = pot.run_program(pot.reft_program(p).encode(), pot.REFT)
        out.append(SimpleNamespace(status=_STATUS[status], value=value))
    return out
