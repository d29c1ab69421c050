"""Shared by every test: the CPU set-up and the fixtures.

Tests run on CPU: Triton kernels execute in the interpreter, which must be switched on before
any ``@triton.jit`` function is defined, hence here, before the package is imported.

Layout, as the code: ``kernels/`` (each op against its float64 loop, both backends),
``executor/`` (the sandbox), ``data/``, ``demo/``, ``system/`` (end-to-end runs and command
lines); the library's modules are tested at this level. Plain helpers (the device, the
repository's root, the float64 comparison) are in ``helpers.py``: ``from helpers import ...``.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from helpers import DEVICE


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


@pytest.fixture
def on_device():
    """Tensors are made on the GPU where there is one (compiled kernels), else on the CPU (the
    Triton interpreter). Kernel test modules opt in with ``pytest.mark.usefixtures``."""
    with torch.device(DEVICE):
        yield


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Every new buffer from torch.empty/empty_like starts as NaN (floats) or 7 (integers), so
    an element a kernel forgets to write shows."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(t):
        if t.is_floating_point():
            return t.fill_(float("nan"))
        return t if t.dtype == torch.bool or t.is_complex() else t.fill_(7)

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


@pytest.fixture
def recording_backend():
    """A torch.compile backend factory: aot_eager that appends each traced graph's code to
    ``graphs``, to check that an op is in it as one node."""
    def make(graphs: list):
        def backend(gm, example_inputs):
            graphs.append(gm.code)
            return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)
        return backend
    return make
