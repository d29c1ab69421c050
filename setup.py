"""Build rlkd_fast: the Python package, the kernels mapped in as `rlkd_fast.kernels`, and the
C++ executor core (pybind11, g++ only, Linux)."""

import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def extensions():
    """The sandboxed executor is Linux-only; elsewhere the package installs without it and
    `PotExecutor(...)` raises a clear error at construction."""
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    if not sys.platform.startswith("linux") or not sources:
        return []
    from pybind11.setup_helpers import Pybind11Extension

    return [
        Pybind11Extension(
            "rlkd_fast._executor",
            sources,
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=["-O2", "-Wall"],
        )
    ]


setup(
    name="rlkd_fast",
    version="0.1.0",
    description="Fast RL-based knowledge distillation with an LLM judge: fused Triton kernels "
    "for PPO/GRPO/YoN rewards and a sandboxed C++ program executor",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # every package under rlkd_fast/ (data, demo, configs, ...) and the kernels mapped in
    packages=[*find_packages(include=["rlkd_fast", "rlkd_fast.*"]), "rlkd_fast.kernels"],
    package_dir={"rlkd_fast.kernels": "kernels"},
    package_data={"rlkd_fast.configs": ["*.yaml", "accelerate/*.yaml"],
                  "rlkd_fast.demo": ["judge/*"]},
    ext_modules=extensions(),
    install_requires=[
        "torch>=2.4",
        "triton>=3.0",
        "transformers>=4.45",
        "datasets>=2.19",
        "accelerate>=0.34",
        "numpy",
        "pyyaml",
        "tqdm",
        "sympy",
        "matplotlib",  # the run's curves.png
    ],
    extras_require={
        "test": ["pytest>=8", "ruff>=0.6", "pebble>=5"],
        "gpu": ["flash-attn", "deepspeed", "liger-kernel"],
        "tensorboard": ["tensorboard"],  # optional TensorBoard logs beside metrics.jsonl
        # benchmarks/test_bench_loop.py: the RL step against TRL's GRPOTrainer
        "bench": ["trl>=1.16", "pebble>=5"],
    },
    entry_points={
        "console_scripts": [
            "rlkd-train=rlkd_fast.train:main",
            "rlkd-evaluate=rlkd_fast.evaluate:main",
        ]
    },
)
