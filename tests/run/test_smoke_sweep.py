"""The embedded default end to end: `python -m sweeper launch sweeps/smoke.yaml` through a real local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.records.store import best_trial, load_sweep
from sweeper.report.plots import PLOTS

from ..conftest import ROOT

pytestmark = pytest.mark.slow

# the smoke sweep does not evaluate during training: every plot but the held-out margins
DRAWN = [name for name in PLOTS if name != "eval_margins"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", "launch", str(ROOT / "sweeps" / "smoke.yaml")],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc.stdout


def test_every_trial_completes_with_records(smoke_run: tuple[Path, str]) -> None:
    work, _ = smoke_run
    sweep = load_sweep(work / "trials" / "smoke")
    assert sweep.by_status() == {"completed": 4}
    for trial in sweep.trials:
        assert (trial.path / "params.json").is_file()
        assert trial.curve, "every logging step is a result"
        assert trial.adapter is not None and (trial.adapter / "adapter_config.json").is_file()
        assert trial.final["sweeper/peak_rss_mb"] > 0
    assert (work / "trials" / "smoke" / "data" / "train.jsonl").is_file()
    meta = json.loads((work / "trials" / "smoke" / "sweep.json").read_text())
    assert meta["finished_at"] and meta["data"]["system_turn"] == "user/assistant/user workaround"


def test_the_learnable_signal_shows(smoke_run: tuple[Path, str]) -> None:
    work, _ = smoke_run
    sweep = load_sweep(work / "trials" / "smoke")
    finals = {t.params["learning_rate"]: t.value("rewards/margins") for t in sweep.trials}
    assert max(v for v in finals.values() if v is not None) > 0.1  # margins rise above 0
    good = min(t.value("rewards/margins") or 0 for t in sweep.trials if t.params["learning_rate"] > 1e-3)
    bad = max(t.value("rewards/margins") or 0 for t in sweep.trials if t.params["learning_rate"] < 1e-4)
    assert good > 10 * bad  # good and bad learning rates give visibly different curves


def test_report_names_the_best_trial(smoke_run: tuple[Path, str]) -> None:
    work, stdout = smoke_run
    report = work / "reports" / "smoke.md"
    assert report.is_file()
    sweep = load_sweep(work / "trials" / "smoke")
    best = best_trial(sweep, "rewards/margins", "maximize")
    assert best is not None
    assert f"**`{best.trial_id}`**" in report.read_text()
    assert f"Report: {report}" in stdout
    assert "completed: rewards/margins" in stdout  # progress lines while it runs


def test_held_out_evaluation_backs_the_winner(smoke_run: tuple[Path, str]) -> None:
    work, stdout = smoke_run
    sweep = load_sweep(work / "trials" / "smoke")
    base = sweep.base_evaluation[0]["preference"]
    rates = {t.params["learning_rate"]: t.evaluation["preference"]["rate"] for t in sweep.trials}
    assert min(r for lr, r in rates.items() if lr > 1e-3) > base["rate"]  # trained trials beat base held out
    assert (work / "reports" / "smoke" / "samples.md").is_file()
    report = (work / "reports" / "smoke.md").read_text()
    assert "## Held-out evaluation" in report and "Held-out evidence " in report
    # the two lr 3e-3 trials tie at 100% held out: whichever the margin tie-break names, nothing contradicts the metric
    assert "⚠ Held-out evidence disagrees" not in report and "better beyond noise" in report
    assert "Evaluating base and 4 trial(s) on 26 held-out pairs" in stdout


def test_report_regenerated_from_trials_matches_what_launch_wrote(smoke_run: tuple[Path, str]) -> None:
    work, _ = smoke_run
    launched = (work / "reports" / "smoke.md").read_text()
    drawn = [n for n in DRAWN if n != "accuracies" or "`rewards/accuracies` is" not in launched]  # flat: in words
    for name in drawn:  # launch drew every plot it references
        assert (work / "reports" / "smoke" / f"{name}.png").is_file()
        assert f"![{name}](smoke/{name}.png)" in launched
    assert (work / "trials" / "smoke" / "trials.csv").is_file()
    assert (work / "trials" / "smoke" / "trials.parquet").is_file()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", "report", "trials/smoke", "--reports-dir", "again"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (work / "again" / "smoke.md").read_text() == launched
    assert sorted(p.name for p in (work / "again" / "smoke").iterdir()) == sorted(f"{n}.png" for n in drawn)
