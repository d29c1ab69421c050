"""Tests run on CPU: Triton kernels execute in the interpreter, which must be switched on before
any ``@triton.jit`` function is defined, hence here, before the package is imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
