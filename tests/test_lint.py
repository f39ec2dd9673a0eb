"""ruff is part of the test command: style problems fail the suite like any other bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_ruff_clean() -> None:
    # CI installs ruff with the test extra: a missing ruff fails here, it is never skipped
    ruff = str(Path(sys.executable).parent / "ruff")
    assert Path(ruff).exists(), f"ruff is not installed beside {sys.executable}: pip install -e '.[test]'"
    for command in (["check"], ["format", "--check"]):
        proc = subprocess.run([ruff, *command, "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_version() -> None:
    assert sys.version_info >= (3, 11)
