"""Compare: two recorded sweeps (the smoke grid in 4-bit and in 8-bit) side by side, golden-file tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.__main__ import main
from sweeper.records.store import load_sweep
from sweeper.report.compare import render_compare, spec_differences

from ..conftest import FIXTURES
from .test_report import build_demo, check_golden

RECORDED = FIXTURES / "trials"


def test_compare_matches_golden_file() -> None:
    sweeps = [load_sweep(RECORDED / "smoke"), load_sweep(RECORDED / "smoke-8bit")]
    check_golden(render_compare(sweeps), FIXTURES / "golden" / "compare_smoke.md")


def test_compare_shows_what_differs_and_each_best() -> None:
    sweeps = [load_sweep(RECORDED / "smoke"), load_sweep(RECORDED / "smoke-8bit")]
    assert spec_differences(sweeps) == [("model.quantization", ["4bit", "8bit"])]  # the only designed difference
    text = render_compare(sweeps)
    assert "| quantization | 4bit | 8bit |" in text
    assert "| best config | gradient_accumulation_steps=1, learning_rate=0.003 | " in text
    # the same four configurations ran in both: one row each, a value per sweep
    configs = text.split("## Same configuration, each sweep")[1]
    assert sum(1 for line in configs.splitlines() if line.startswith("| gradient_accumulation_steps=")) == 4


def test_spec_values_read_as_yaml_not_python() -> None:
    from sweeper.report.compare import spec_value

    assert spec_value([0.003, 0.001]) == "0.003, 0.001"  # a swept grid's values, not a Python list
    assert (spec_value(False), spec_value(None), spec_value([])) == ("false", "-", "(none)")
    assert spec_value({"r": 16, "targets": ["q_proj", "v_proj"]}) == "r: 16, targets: q_proj, v_proj"


def test_compare_command_writes_reports_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = build_demo(tmp_path / "trials" / "demo")
    out = tmp_path / "reports"
    assert main(["compare", str(RECORDED / "smoke"), str(demo), "--reports-dir", str(out)]) == 0
    written = out / "compare-smoke-demo.md"
    assert str(written) in capsys.readouterr().out
    text = written.read_text()
    assert text.startswith("# Sweep comparison: smoke vs demo")
    assert "| compute spent | 0.004394 CPU-h | 1.083 GPU-h ($2.17) |" in text  # CPU-hours beside GPU-hours and $
    assert "| saved by pruning | none pruned | 0.08333 GPU-h over 1 pruned |" in text


def test_compare_needs_two_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(RECORDED / "smoke")]) == 2
    assert capsys.readouterr().err.startswith("ERROR: compare needs at least 2 sweep folders, got 1")
