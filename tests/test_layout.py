"""The library and the offline demo apart: the demo is reached only where a run asks for it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rlkd_fast

PACKAGE = Path(rlkd_fast.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_run_inputs_imports_the_demo():
    """Outside rlkd_fast/demo/, the demo is imported only where ``tiny`` is resolved; the data
    registry names its generator and imports it when asked for ``synthetic``."""
    users = {path.relative_to(PACKAGE).as_posix()
             for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] != "demo"
             if any(name.startswith("rlkd_fast.demo") for name in _imports(path))}
    assert users == {"run_inputs.py"}


def test_a_run_with_real_models_never_loads_the_demo():
    code = ("import sys, rlkd_fast.train, rlkd_fast.evaluate, rlkd_fast.judge_quality; "
            "from rlkd_fast.data import load_split; "
            "print(sorted(m for m in sys.modules if m.startswith('rlkd_fast.demo'))); "
            "load_split('synthetic:1', split='test', size=2); "
            "print(sorted(m for m in sys.modules if m.startswith('rlkd_fast.demo')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out == ["[]", "['rlkd_fast.demo', 'rlkd_fast.demo.synthetic']"]
