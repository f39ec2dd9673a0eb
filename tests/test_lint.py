"""ruff is part of the test command: style problems fail the suite like any other bug."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(ROOT / ".venv" / "bin" / "ruff")
    if not shutil.which(ruff):
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    for command in (["check"], ["format", "--check"]):
        proc = subprocess.run([ruff, *command, "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_version() -> None:
    assert sys.version_info >= (3, 11)
