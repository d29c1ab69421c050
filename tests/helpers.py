"""Helpers the tests import (``from helpers import ...``): the device, the repository's root, and
the comparison of a result with a float64 reference."""

from pathlib import Path

import torch

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
