"""The store reads Ray's trial folders; the report is a pure function of those records (golden file)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sweeper.__main__ import main
from sweeper.records.store import best_trial, load_sweep, write_json
from sweeper.report.markdown import render_report, write_report
from sweeper.report.plots import PLOTS
from sweeper.report.summary import accounting, compute, trials_frame

from ..conftest import FIXTURES

GOLDEN = FIXTURES / "golden" / "report_basic.md"
# what the demo sweep draws: every plot but the held-out margins (its trials did not evaluate during training) and
# the timeline (its hand-made rows carry no Ray timestamps)
DRAWN = [name for name in PLOTS if name not in ("eval_margins", "timeline")]

META = {
    "name": "demo",
    "spec_path": "sweeps/demo.yaml",
    "spec_hash": "0123456789ab",
    "spec": {
        "name": "demo",
        "method": "grid",
        "model": {"name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "quantization": "4bit", "lora": {"r": 16}},
        "data": {"path": "Intel/orca_dpo_pairs", "format": "orca"},
        "training": {"per_device_train_batch_size": 4},
        "resources": {"gpus_per_trial": 1},
        "output": {"reports_dir": "reports"},
    },  # fmt: skip
    "metric": {"name": "rewards/margins", "goal": "maximize"},
    "swept": ["learning_rate", "gradient_accumulation_steps"],
    "n_planned": 6,
    "data": {"rows": "12859 rows: 12859 valid", "n_train": 12216, "n_test": 643},
    "versions": {"torch": "2.13.0", "trl": "1.16.0"},
    "git_commit": "abcdef012345",
    "host": {"hardware": "8 CPUs (x86_64, Linux), 2 GPUs", "ray": {"gpus_per_trial": 1.0}},
    "started_at": "2026-11-25T10:00:00+00:00",
    "finished_at": "2026-11-25T12:00:00+00:00",
    "wall_s": 7200.0,
}
GUARD_FLAG = "flagged: loss ~0 with margins 25"


def curve(margins: list[float], ga: int, predicted: float | None = None) -> list[dict]:
    """Logged steps every 2 optimizer steps of batch 4: 5 minutes each on one GPU."""
    rows = [{"rewards/margins": m, "rewards/accuracies": 1.0 if m > 0 else 0.0, "loss": 0.69 - m / 2,
             "logps/chosen": -120.0 + m, "logps/rejected": -120.0 - m,
             "sweeper/step": 2 * (i + 1), "sweeper/examples_seen": 8 * ga * (i + 1),
             "sweeper/elapsed_s": 300.0 * (i + 1), "sweeper/peak_rss_mb": 3000.0 + i,
             "sweeper/cuda_max_allocated_mb": 20000.0 + 1000 * ga, "sweeper/cuda_max_reserved_mb": 24000.0 + 1000 * ga}
            for i, m in enumerate(margins)]  # fmt: skip
    if predicted is not None:
        for row in rows:
            row["sweeper/predicted_peak_gb"] = predicted
    return rows


def write_trial(root: Path, dirname: str, params: dict, results: list[dict], error: str | None = None,
                done: bool = True, final: dict | None = None, pruned: dict | None = None,
                attempts: list[dict] | None = None) -> None:  # fmt: skip
    folder = root / dirname
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"params": params}))
    rows = list(results)
    if done:
        gpu = {"sweeper/device": "cuda", "sweeper/gpu_name": "NVIDIA A100-SXM4-80GB"}
        rows.append({**rows[-1], "sweeper/done": 1, **gpu, **(final or {})})
        (folder / "checkpoint_000000").mkdir()
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if error:
        (folder / "error.txt").write_text(error)
    if pruned is not None:
        write_json(folder / "pruned.json", pruned)
    if attempts is not None:
        write_json(folder / "attempts.json", attempts)


def attempt(n: int, batch: int, ga: int, status: str) -> dict:
    return {"attempt": n, "per_device_train_batch_size": batch, "gradient_accumulation_steps": ga,
            "effective_batch": batch * ga, "status": status, "step": 0,
            "error": "CUDA out of memory. Tried to allocate 2.00 GiB" if status == "oom" else None}  # fmt: skip


def build_demo(root: Path) -> Path:
    """Six trials on a (recorded-looking) GPU sweep: 2 completed, 1 completed after an OOM retry and flagged by
    the margin-hacking guard, 1 pruned, 1 out of memory, 1 error."""
    root.mkdir(parents=True)
    write_json(root / "sweep.json", META)
    write_trial(root, "aaaaa_00000--lr=1e-05_ga=1", {"learning_rate": 1e-5, "gradient_accumulation_steps": 1},
                curve([0.0, 0.001, 0.003], 1, predicted=24.5), final={"sweeper/guard": "ok"})  # fmt: skip
    write_trial(root, "aaaaa_00001--lr=0.003_ga=2", {"learning_rate": 3e-3, "gradient_accumulation_steps": 2},
                curve([0.0, 0.4, 0.9], 2, predicted=21.0), final={"sweeper/guard": GUARD_FLAG},
                attempts=[attempt(1, 4, 2, "oom"), attempt(2, 2, 4, "completed")])  # fmt: skip
    write_trial(root, "aaaaa_00002--lr=0.003_ga=1", {"learning_rate": 3e-3, "gradient_accumulation_steps": 1},
                curve([0.0, 0.5], 1), error="Traceback ...\nRuntimeError: boom", done=False)  # fmt: skip
    write_trial(root, "aaaaa_00003--lr=0.0001_ga=1", {"learning_rate": 1e-4, "gradient_accumulation_steps": 1},
                curve([0.0, 0.02], 1), done=False,
                pruned={"step": 4, "examples_seen": 16, "value": 0.02, "reason": "median: 0.02 < 0.4 at 16 examples",
                        "saved_examples": 8, "saved_s": 300.0})  # fmt: skip
    write_trial(root, "aaaaa_00004--lr=0.0001_ga=2", {"learning_rate": 1e-4, "gradient_accumulation_steps": 2},
                [], done=False, error="torch.OutOfMemoryError: CUDA out of memory.",
                attempts=[attempt(1, 4, 2, "oom"), attempt(2, 2, 4, "oom"), attempt(3, 1, 8, "oom")])  # fmt: skip
    write_trial(root, "aaaaa_00005--lr=1e-05_ga=2", {"learning_rate": 1e-5, "gradient_accumulation_steps": 2},
                curve([0.0, 0.002, 0.004], 2, predicted=25.5), final={"sweeper/guard": "ok"})  # fmt: skip
    return root


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    return build_demo(tmp_path / "trials" / "demo")


def test_store_reads_statuses_curves_and_adapter(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    by_id = {t.trial_id: t for t in sweep.trials}
    assert sweep.by_status() == {"completed": 3, "error": 1, "pruned": 1, "oom": 1}
    assert len(by_id["aaaaa_00001"].curve) == 3  # the final summary is not part of the curve
    assert by_id["aaaaa_00001"].value("rewards/margins") == 0.9
    assert by_id["aaaaa_00001"].adapter == sweep_dir / "aaaaa_00001--lr=0.003_ga=2" / "checkpoint_000000"
    assert by_id["aaaaa_00002"].adapter is None
    best = best_trial(sweep, "rewards/margins", "maximize")
    assert best is not None and best.trial_id == "aaaaa_00001"
    worst = best_trial(sweep, "rewards/margins", "minimize")
    assert worst is not None and worst.trial_id == "aaaaa_00000"  # errored and pruned trials never win


def test_a_torn_last_line_is_ignored(sweep_dir: Path) -> None:
    result = sweep_dir / "aaaaa_00000--lr=1e-05_ga=1" / "result.json"
    result.write_text(result.read_text() + '{"rewards/margins": 0.')  # the driver died mid-write
    trial = next(t for t in load_sweep(sweep_dir).trials if t.trial_id == "aaaaa_00000")
    assert trial.status == "completed"


def check_golden(text: str, golden: Path) -> None:
    if os.environ.get("SWEEPER_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_report_matches_golden_file(sweep_dir: Path) -> None:
    check_golden(render_report(load_sweep(sweep_dir), plots=DRAWN), GOLDEN)


def test_recorded_cpu_sweep_report_matches_golden_file() -> None:
    check_golden(render_report(load_sweep(FIXTURES / "trials" / "smoke")), FIXTURES / "golden" / "report_smoke.md")


def test_report_names_best_and_its_warnings(sweep_dir: Path) -> None:
    text = render_report(load_sweep(sweep_dir))
    verdict = text.split("## Verdict")[1].split("## Trials")[0]
    assert "**`aaaaa_00001`**" in verdict
    assert "0.896 ahead of the runner-up `aaaaa_00005` (0.004)" in verdict
    assert f"margin-hacking guard: {GUARD_FLAG}" in verdict  # the winner is flagged: say so
    assert "after 1 out-of-memory attempt(s): finished at per-device batch 2 × accumulation 4" in verdict
    assert "only 6 optimizer steps" in verdict
    assert "3 completed, 1 pruned, 1 oom, 1 error (of 6 planned)" in text
    assert "RuntimeError: boom" in text
    assert "out of memory at every attempt (batch 4, batch 2, batch 1)" in text


def test_report_table_has_one_row_per_trial_with_derived_columns(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    text = render_report(sweep)
    summary = text.split("## Trials")[1].split("## ")[0]
    rows = [ln for ln in summary.splitlines() if ln.startswith("| `")]
    assert len(rows) == len(sweep.trials) == 6
    head = summary.splitlines()[2]
    assert head == "| trial | learning_rate | gradient_accumulation_steps | status | margins final | guard | GPU-h | " \
                   "peak memory |"  # fmt: skip
    assert len(head.split("|")) - 2 <= 10  # a summary that reads at a glance
    assert "| pruned at 16 ex |" in next(r for r in rows if "aaaaa_00003" in r)
    assert "completed (2 attempts)" in next(r for r in rows if "aaaaa_00001" in r)
    assert "⚠ flagged" in next(r for r in rows if "aaaaa_00001" in r)
    details = text.split("## Details")[1]
    full = [ln for ln in details.splitlines() if ln.startswith("| trial |")][0]
    for column in ("stopped at (examples)", "margins final", "margins best", "logps/rejected final", "GPU-h",
                   "$ at 2/h", "peak memory", "predicted GPU peak", "guard", "effective batch"):  # fmt: skip
        assert f"| {column} |" in full
    detail_rows = [ln for ln in details.splitlines() if ln.startswith("| `")]
    assert "| pruned | 16 |" in next(r for r in detail_rows if "aaaaa_00003" in r)  # stopped at 16 examples seen
    assert "| 8 |" in next(r for r in detail_rows if "aaaaa_00001" in r)  # effective batch unchanged by the retry
    assert "21.5 / 25.4 GiB alloc/res" in next(r for r in rows if "aaaaa_00005" in r)


def test_compute_counts_hours_money_and_pruning_savings(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    c = compute(sweep)
    # wall time of every trial that ran: 900 + 900 + 600 + 600 + 900 s on 1 GPU each
    assert c.unit == "GPU" and c.spent_h == pytest.approx(3900 / 3600)
    assert c.saved_h == pytest.approx(300 / 3600) and c.saved_examples == 8 and c.n_pruned == 1
    text = render_report(sweep)
    assert "- Spent: 1.083 GPU-hours (1 GPU per trial × trial wall time), $2.17 at $2 per GPU-hour." in text
    assert "pruning saved 7%" in text
    assert "- Out-of-memory attempts: 4" in text


def test_gpu_hour_rate_comes_from_the_spec(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    sweep.meta["spec"]["resources"]["gpu_hour_usd"] = 4.0  # the memory issue adds this field
    assert accounting(sweep).usd_per_hour == 4.0
    text = render_report(sweep)
    assert "$4.33 at $4 per GPU-hour" in text
    assert "| `aaaaa_00001` ★ | 0.003 | 2 | 8 |" in text  # a key this version does not know loses no column


def test_write_report_draws_the_plots_it_references(sweep_dir: Path, tmp_path: Path) -> None:
    sweep = load_sweep(sweep_dir)
    out = write_report(sweep, tmp_path / "reports")
    text = out.read_text()
    for name in DRAWN:
        png = tmp_path / "reports" / "demo" / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"![{name}](demo/{name}.png)" in text
    assert text == render_report(sweep, plots=DRAWN)


def test_trials_frame_is_exported_as_csv_and_parquet(sweep_dir: Path, tmp_path: Path) -> None:
    sweep = load_sweep(sweep_dir)
    frame = trials_frame(sweep)
    assert list(frame["trial_id"]) == [t.trial_id for t in sweep.trials]
    assert list(frame.columns[:3]) == ["trial_id", "learning_rate", "gradient_accumulation_steps"]
    write_report(sweep, tmp_path / "reports")
    csv = pd.read_csv(sweep_dir / "trials.csv")
    parquet = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(csv) == len(parquet) == 6
    assert parquet.loc[parquet["trial_id"] == "aaaaa_00003", "saved_s"].item() == 300.0
    assert load_sweep(sweep_dir).by_status() == sweep.by_status()  # the tables are not mistaken for trials


def test_report_command_regenerates(sweep_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "reports"
    assert main(["report", str(sweep_dir), "--reports-dir", str(out_dir)]) == 0
    assert (out_dir / "demo.md").read_text() == render_report(load_sweep(sweep_dir), plots=DRAWN)
    assert str(out_dir / "demo.md") in capsys.readouterr().out


def test_report_on_a_folder_that_is_no_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {tmp_path}: not a sweep folder")


def beta_sweep(root: Path, finals: dict[float, float]) -> Path:
    """Completed trials at lr 3e-3 that differ only in beta, with the given final margins."""
    root.mkdir(parents=True)
    write_json(root / "sweep.json", {**META, "swept": ["beta"]})
    for i, (beta, margin) in enumerate(finals.items()):
        write_trial(root, f"bbbbb_0000{i}--beta={beta}", {"beta": beta}, curve([0.0, margin / 2, margin], 1))
    return root


def test_a_swept_beta_qualifies_a_margins_winner(tmp_path: Path) -> None:
    """rewards/margins = beta × log-ratio: beta 0.3 wins on margins (4.5 > 1.8) but beta 0.1 leads on margins ÷ beta
    (18 > 15), and the verdict says both; where the larger beta leads on both it says so too."""
    verdict = render_report(load_sweep(beta_sweep(tmp_path / "a", {0.1: 1.8, 0.3: 4.5}))).split("## Trials")[0]
    assert "**`bbbbb_00001`**" in verdict
    assert "beta is swept and `rewards/margins` is beta × a log-ratio" in verdict
    assert "Divided by beta, `bbbbb_00000` (beta=0.1) leads with 18 against 15" in verdict
    verdict = render_report(load_sweep(beta_sweep(tmp_path / "b", {0.1: 1.0, 0.3: 4.5}))).split("## Trials")[0]
    assert "Divided by beta (15) this trial still leads." in verdict


def test_no_beta_warning_when_beta_is_fixed_or_the_metric_does_not_scale(sweep_dir: Path, tmp_path: Path) -> None:
    assert "beta is swept" not in render_report(load_sweep(sweep_dir))
    sweep = load_sweep(beta_sweep(tmp_path / "acc", {0.1: 1.8, 0.3: 4.5}))
    sweep.meta["metric"] = {"name": "rewards/accuracies", "goal": "maximize"}  # a sign count: beta-free
    assert "beta is swept" not in render_report(sweep)


def test_compute_bar_shows_spent_and_saved_hours_at_the_price(sweep_dir: Path, tmp_path: Path) -> None:
    from sweeper.report.figdata import compute_segments, compute_title
    from sweeper.report.plots import write_plots

    sweep = load_sweep(sweep_dir)
    c = compute(sweep)
    spent, saved = compute_segments(c)  # no shared references or evaluation in the demo: two parts
    assert (spent.kind, saved.kind) == ("spent", "saved")
    assert spent.hours == pytest.approx(3900 / 3600) and saved.hours == pytest.approx(300 / 3600)
    assert spent.text("GPU") == "trials: 1.08 GPU-h, $2.17"  # the spec's default $2 per GPU-hour
    assert saved.text("GPU") == "saved by pruning 1 trial(s): 0.0833 GPU-h, $0.17"
    assert compute_title(c) == "compute in GPU-hours at $2 per GPU-hour"
    assert "compute" in write_plots(sweep, tmp_path / "plots")
    assert (tmp_path / "plots" / "compute.png").read_bytes()[:4] == b"\x89PNG"
    cpu = load_sweep(FIXTURES / "trials" / "smoke")  # CPU trials: CPU-hours, no price, nothing pruned
    (only,) = compute_segments(compute(cpu))
    assert only.usd is None and only.text("CPU").endswith("CPU-h")
    assert compute_title(compute(cpu)) == "compute in CPU-hours; no trial was pruned"
    assert "![compute](smoke/compute.png)" in render_report(cpu, plots=["compute"])


def test_report_tells_each_paused_trials_story(sweep_dir: Path) -> None:
    # on_prune: pause writes <trial>/events.json; one trial was paused, resumed and completed, one paused then pruned
    resumed = sweep_dir / "aaaaa_00005--lr=1e-05_ga=2"
    write_json(resumed / "events.json", [
        {"event": "paused", "examples_seen": 8, "step": 2, "value": 0.002, "reason": "below the pruner's bar"},
        {"event": "resumed", "examples_seen": 8, "step": 2, "value": 0.002, "reason": "the bar fell below it"},
    ])  # fmt: skip
    pruned = sweep_dir / "aaaaa_00003--lr=0.0001_ga=1"
    write_json(pruned / "events.json", [
        {"event": "paused", "examples_seen": 16, "step": 4, "value": 0.02, "reason": "below the pruner's bar"},
        {"event": "pruned", "examples_seen": 16, "step": 4, "value": 0.02, "reason": "its upper bound cannot win"},
    ])  # fmt: skip
    text = render_report(load_sweep(sweep_dir))
    assert "- Paused below the bar: 2 trial(s), 1 of them resumed (`<trial>/events.json`):" in text
    assert ("  - `aaaaa_00005`: paused at 8 examples (below the pruner's bar); resumed at 8 examples (the bar fell "
            "below it); then ran to its end") in text  # fmt: skip
    assert "  - `aaaaa_00003`: paused at 16 examples (below the pruner's bar); pruned at 16 examples (its upper " \
           "bound cannot win); then pruned for good" in text  # fmt: skip


def test_a_sweep_without_pauses_says_nothing_of_them(sweep_dir: Path) -> None:
    assert "Paused below the bar" not in render_report(load_sweep(sweep_dir))
