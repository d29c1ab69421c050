"""Benchmarks are pytest files; on CPU they run tiny smoke sizes under the Triton interpreter."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
