"""``benchmarks/gpu_check.sh`` on a machine without CUDA: every CUDA part is recorded as
skipped, and the one results table and the results archive are still written, so the scarce GPU
minutes go to measuring rather than to debugging the script."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First cell -> the other cells, for every row of the markdown tables."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs every part")
def test_gpu_check_without_cuda_skips_cleanly_and_writes_the_table(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("GPU_CHECK_ON_CPU", None)
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = (tmp_path / "gpu_check.md").read_text()
    assert done.stdout.rstrip().endswith("gpu_check.md")  # the table is printed, then where
    rows = table_rows(text)
    assert rows["card"] == ["no CUDA"]
    for part in ("cuda-tests", "judge-benchmark", "kernel-benchmarks", "models", "trainer"):
        assert rows[part][0] == "skipped: no CUDA", (part, rows[part])
    assert rows["decode-benchmark"][0] in ("skipped: no CUDA", "not run")
    assert rows["install"][0].startswith("ok")
    assert "no benchmark results" in text
    assert (tmp_path / "gpu_check_results.tar.gz").stat().st_size > 0
    assert "gpu_check: done" in (tmp_path / "gpu_check.log").read_text()
