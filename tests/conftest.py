"""Tests run on CPU: Triton kernels execute in the interpreter, which must be switched on before
any ``@triton.jit`` function is defined, hence here, before the package is imported."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The tests' models are tiny: thread start-up and contention cost more than they bring
    # (seen: one tiny generate() 2-3 s with 2 threads under load, 0.05 s with 1).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
