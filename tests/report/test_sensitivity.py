"""Parameter importances of a recorded sweep (Optuna's PED-ANOVA and fANOVA), and the refusal on too few trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeper.records.store import load_sweep
from sweeper.report.sensitivity import MIN_TRIALS, sensitivity, sensitivity_lines

from ..conftest import ROOT

GRID24 = ROOT / "benchmarks" / "recorded" / "cpu_grid24"


def test_importances_of_the_recorded_24_trial_grid() -> None:
    s = sensitivity(load_sweep(GRID24), "rewards/margins", "maximize")
    assert s is not None and s.reason is None and s.n_trials == 24
    assert set(s.importances) == {"PED-ANOVA", "fANOVA"}
    for shares in s.importances.values():
        assert set(shares) == {"learning_rate", "gradient_accumulation_steps", "beta"}
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    assert s.ranked[0] == "learning_rate"  # 4 learning rates spanning 30x move the toy's margins most
    lines = sensitivity_lines(s, "rewards/margins")
    assert lines[0] == "| parameter | PED-ANOVA | fANOVA |" and "most sensitive to `learning_rate`" in lines[-1]


def test_too_few_trials_are_said_in_words(tmp_path: Path) -> None:
    sweep = load_sweep(ROOT / "tests" / "fixtures" / "trials" / "smoke")
    s = sensitivity(sweep, "rewards/margins", "maximize")
    assert s is not None and s.importances == {} and f"fewer than {MIN_TRIALS}" in (s.reason or "")
    assert sensitivity_lines(s, "rewards/margins")[0].startswith("Parameter importances: not computed, 4 completed")
