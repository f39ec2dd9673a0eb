"""TRL's in-training evaluation (eval_steps) reaches the records' readers: trials.csv, the report table, a plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sweeper.records import load_sweep
from sweeper.report.markdown import render_report
from sweeper.report.summary import trials_frame

from ..conftest import FIXTURES


def with_eval_rows(tmp_path: Path) -> Path:
    sweep_dir = Path(shutil.copytree(FIXTURES / "trials" / "smoke", tmp_path / "smoke"))
    for i, trial in enumerate(sorted(p for p in sweep_dir.iterdir() if p.is_dir())):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]
        out = []
        for k, row in enumerate(rows):
            out.append(row)
            if k in (3, 7):  # an evaluation after these steps, as TRL logs it: no train metric in it
                ev = {key: v for key, v in row.items() if key not in ("rewards/margins", "loss")}
                out.append({**ev, "eval_rewards/margins": 0.1 * (i + 1) * k, "eval_loss": 0.7 - 0.01 * k})
        for n, row in enumerate(out, 1):  # Ray numbers every reported result
            row["training_iteration"] = n
        (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in out))
    return sweep_dir


def test_eval_metrics_are_columns_of_trials_csv_and_of_the_report(tmp_path: Path) -> None:
    sweep = load_sweep(with_eval_rows(tmp_path))
    frame = trials_frame(sweep)
    assert {"eval_rewards/margins", "eval_loss"} <= set(frame.columns)
    assert sorted(frame["eval_rewards/margins"].round(3)) == [0.7, 1.4, 2.1, 2.8]  # the last evaluation of each
    text = render_report(sweep)
    assert "eval margins final" in text and "eval loss final" in text


def test_no_eval_columns_where_no_trial_evaluated() -> None:
    frame = trials_frame(load_sweep(FIXTURES / "trials" / "smoke"))
    assert not [c for c in frame.columns if c.startswith("eval_")]


def test_the_held_out_margins_are_drawn(tmp_path: Path) -> None:
    from sweeper.report.plots import write_plots

    drawn = write_plots(load_sweep(with_eval_rows(tmp_path)), tmp_path / "plots")
    assert "eval_margins" in drawn and (tmp_path / "plots" / "eval_margins.png").stat().st_size > 5000
    assert "eval_margins" not in write_plots(load_sweep(FIXTURES / "trials" / "smoke"), tmp_path / "plain")


def test_the_last_line_names_every_phase_that_took_time() -> None:
    from sweeper.run.phases import Phases

    phases = Phases()
    phases.add("data", 24.43)
    phases.add("shared references", 0.0)  # nothing to compute: not worth a word
    phases.add("trials", 36.0)
    text = phases.text()
    assert text.startswith("in ") and text.endswith("(data 24.4 s, trials 36 s)")


def test_the_report_shows_every_phase_and_the_work_around_the_trials(tmp_path: Path) -> None:
    sweep_dir = Path(shutil.copytree(FIXTURES / "trials" / "smoke", tmp_path / "smoke"))
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    meta["phases"] = [["data", 2.3], ["Ray start", 8.5], ["shared references", 0.0], ["trials", 28.0],
                      ["evaluation", 3600.0]]  # fmt: skip
    meta["wall_s"] = 3645.1
    (sweep_dir / "sweep.json").write_text(json.dumps(meta))
    text = render_report(load_sweep(sweep_dir))
    assert "(3645 s: data 2.3 s, Ray start 8.5 s, trials 28 s, evaluation 3600 s)" in text  # in order, no 0 s
    assert "- Besides the trials: 1 CPU-hours on evaluation;" in text  # an hour of evaluation on 1 CPU
