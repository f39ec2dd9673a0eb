"""The store reads Ray's trial folders; the report is a pure function of those records (golden file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sweeper.__main__ import main
from sweeper.report import render_report
from sweeper.store import best_trial, load_sweep, write_json

from .conftest import FIXTURES

GOLDEN = FIXTURES / "golden" / "report_basic.md"

META = {
    "name": "demo",
    "spec_path": "sweeps/demo.yaml",
    "spec_hash": "0123456789ab",
    "spec": {"name": "demo", "method": "grid",
             "model": {"name_or_path": "builtin:tiny-mistral", "quantization": "4bit", "lora": {"r": 8}},
             "data": {"path": "builtin:synthetic", "format": "orca"},
             "training": {"per_device_train_batch_size": 4},
             "output": {"reports_dir": "reports"}},  # fmt: skip
    "metric": {"name": "rewards/margins", "goal": "maximize"},
    "swept": ["learning_rate", "gradient_accumulation_steps"],
    "data": {"rows": "256 rows: 256 valid", "n_train": 230, "n_test": 26},
    "versions": {"torch": "2.13.0", "trl": "1.16.0"},
    "git_commit": "abcdef012345",
    "host": {"hardware": "2 CPUs (x86_64, Linux), no GPU"},
    "started_at": "2026-11-25T10:00:00+00:00",
    "finished_at": "2026-11-25T10:01:00+00:00",
}


def curve(margins: list[float], ga: int) -> list[dict]:
    return [{"rewards/margins": m, "rewards/accuracies": 1.0 if m > 0 else 0.0, "loss": 0.69 - m / 2,
             "sweeper/step": 2 * (i + 1), "sweeper/examples_seen": 8 * ga * (i + 1),
             "sweeper/elapsed_s": 1.5 * (i + 1), "sweeper/peak_rss_mb": 650.0 + i, "trial_id": "x"}
            for i, m in enumerate(margins)]  # fmt: skip


def write_trial(root: Path, dirname: str, params: dict, results: list[dict], error: str | None = None,
                done: bool = True) -> None:  # fmt: skip
    folder = root / dirname
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"params": params}))
    rows = list(results)
    if done:
        rows.append({**rows[-1], "sweeper/done": 1})
        (folder / "checkpoint_000000").mkdir()
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if error:
        (folder / "error.txt").write_text(error)


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    root = tmp_path / "trials" / "demo"
    root.mkdir(parents=True)
    write_json(root / "sweep.json", META)
    write_trial(root, "aaaaa_00000--lr=1e-05_ga=1", {"learning_rate": 1e-5, "gradient_accumulation_steps": 1},
                curve([0.0, 0.001, 0.003], 1))  # fmt: skip
    write_trial(root, "aaaaa_00001--lr=0.003_ga=2", {"learning_rate": 3e-3, "gradient_accumulation_steps": 2},
                curve([0.0, 0.4, 0.9], 2))  # fmt: skip
    write_trial(root, "aaaaa_00002--lr=0.003_ga=1", {"learning_rate": 3e-3, "gradient_accumulation_steps": 1},
                curve([0.0, 0.5], 1), error="Traceback ...\nRuntimeError: boom", done=False)  # fmt: skip
    return root


def test_store_reads_statuses_curves_and_adapter(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    by_id = {t.trial_id: t for t in sweep.trials}
    assert sweep.by_status() == {"completed": 2, "error": 1}
    assert len(by_id["aaaaa_00001"].curve) == 3  # the final summary is not part of the curve
    assert by_id["aaaaa_00001"].value("rewards/margins") == 0.9
    assert by_id["aaaaa_00001"].adapter == sweep_dir / "aaaaa_00001--lr=0.003_ga=2" / "checkpoint_000000"
    assert by_id["aaaaa_00002"].adapter is None
    best = best_trial(sweep, "rewards/margins", "maximize")
    assert best is not None and best.trial_id == "aaaaa_00001"
    worst = best_trial(sweep, "rewards/margins", "minimize")
    assert worst is not None and worst.trial_id == "aaaaa_00000"  # errored trials never win


def test_a_torn_last_line_is_ignored(sweep_dir: Path) -> None:
    result = sweep_dir / "aaaaa_00000--lr=1e-05_ga=1" / "result.json"
    result.write_text(result.read_text() + '{"rewards/margins": 0.')  # the driver died mid-write
    trial = next(t for t in load_sweep(sweep_dir).trials if t.trial_id == "aaaaa_00000")
    assert trial.status == "completed"


def test_report_matches_golden_file(sweep_dir: Path) -> None:
    text = render_report(load_sweep(sweep_dir))
    if os.environ.get("SWEEPER_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_report_names_best_and_errors(sweep_dir: Path) -> None:
    text = render_report(load_sweep(sweep_dir))
    assert "**`aaaaa_00001`**" in text
    assert "0.9" in text
    assert "RuntimeError: boom" in text
    assert "2 completed, 1 error" in text


def test_report_command_regenerates(sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "reports"
    assert main(["report", str(sweep_dir), "--reports-dir", str(out_dir)]) == 0
    assert (out_dir / "demo.md").read_text() == render_report(load_sweep(sweep_dir))
    assert str(out_dir / "demo.md") in capsys.readouterr().out


def test_report_on_a_folder_that_is_no_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {tmp_path}: not a sweep folder")
