"""Preflight: predicted peaks in the dry run, over-budget trials flagged or skipped, GPU-hours and cost,
calibration from an earlier sweep's measured peaks, infeasible configs recorded. No training, no Ray."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sweeper.config.spec import Spec, load_spec, parse_spec
from sweeper.plan import compile_plan, estimate, preflight, resolve
from sweeper.records.store import load_sweep
from sweeper.run.launch import dry_run, run_preflight

from ..conftest import ROOT


def mistral_spec(tmp_path: Path, **resources: Any) -> Spec:
    return parse_spec({
        "name": "mem", "model": {"name_or_path": "mistralai/Mistral-7B-Instruct-v0.2"},
        "data": {"path": "Intel/orca_dpo_pairs", "max_length": 1536, "test_size": 0.05},
        "parameters": {"per_device_train_batch_size": {"values": [2, 8, 16]}},
        "training": {"max_steps": 100, "gradient_accumulation_steps": 2},
        "resources": {"gpu_memory_gb": 40, **resources},
        "output": {"trials_dir": str(tmp_path / "trials"), "reports_dir": str(tmp_path / "reports")},
    })  # fmt: skip


def dry(spec: Spec) -> str:
    out = io.StringIO()
    dry_run(spec, Path("spec.yaml"), out)
    return out.getvalue()


def test_dry_run_of_the_seed_grid_shows_predicted_peaks_and_cost() -> None:
    text = dry(load_spec(ROOT / "sweeps" / "lr_grid.yaml"))
    lines = text.splitlines()
    assert lines[3].startswith("  early_terminate: sweeper peer (percentile 25)")  # the default rule prunes it
    assert "predicted GB" in lines[6]  # the table's header, after the data and pruning lines
    assert text.count(" 30.2") == 6  # six trials at per-device batch 8, max_length 1536, adapter reference
    assert "0 trial(s) whose upper end is over it" in text
    # 6 trials x 3 epochs x 12,216 rows at the seed's ~1 example/s: about the seed's own ~60 GPU-hours
    assert "Predicted GPU-hours: 61.1 for 6 trial(s), $122.16 at $2/GPU-hour" in text


@pytest.mark.parametrize(("mode", "flag"), [("warn", "OVER"), ("skip", "skipped")])
def test_over_budget_trials_are_flagged(tmp_path: Path, mode: str, flag: str) -> None:
    text = dry(mistral_spec(tmp_path, preflight=mode))
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [r[-2:] for r in rows] == [["11.7", "(10.6-12.9)"], ["30.2", "(25.6-34.8)"], ["(45.7-64.1)", flag]]
    assert "1 trial(s) whose upper end is over it" in text  # batch 16: 54.9 GB, band 45.7-64.1 > 40


def test_skip_removes_over_budget_trials_before_ray_and_warn_keeps_them(tmp_path: Path) -> None:
    out = io.StringIO()
    spec = mistral_spec(tmp_path, preflight="skip")
    plan = compile_plan(spec)
    skipped = run_preflight(plan, 0, None, out)
    assert plan.without(r["params"] for r in skipped).configs == [
        {"per_device_train_batch_size": 2},
        {"per_device_train_batch_size": 8},
    ]
    assert skipped == [{"params": {"per_device_train_batch_size": 16}, "reason": "preflight",
                        "predicted_gb": 54.9, "gpu_memory_gb": 40}]  # fmt: skip
    assert "predicted 54.9 GB" in out.getvalue()
    spec = mistral_spec(tmp_path, preflight="warn")
    assert run_preflight(compile_plan(spec), 0, None, io.StringIO()) == []  # warn: all 3 trials run


def test_cost_from_a_configured_throughput(tmp_path: Path) -> None:
    spec = mistral_spec(tmp_path, examples_per_gpu_second=2.0, gpu_hour_usd=3.0)
    # 3 trials x 100 steps x effective batch (2x2, 8x2, 16x2) = 5,200 examples at 2/s = 0.722 h
    line = preflight.cost_line(compile_plan(spec))
    assert line.startswith("Predicted GPU-hours: 0.722 for 3 trial(s), $2.17 at $3/GPU-hour")
    assert "resources.examples_per_gpu_second" in line


def write_trial(sweep: Path, name: str, params: dict[str, Any], final: dict[str, Any]) -> None:
    folder = sweep / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"params": params}))
    (folder / "result.json").write_text(json.dumps(final) + "\n")


def test_an_earlier_sweep_calibrates_and_gives_throughput(tmp_path: Path) -> None:
    spec = mistral_spec(tmp_path, examples_per_gpu_second=None)
    sweep = tmp_path / "trials" / "mem"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "mem"}))
    # Two GPU trials measured (nvidia-smi-like) 20% above the default prediction's activation term.
    for batch in (2, 8):
        setup = estimate.setup_from_settings(resolve(spec, {"per_device_train_batch_size": batch}))
        assert setup is not None
        measured = estimate.predict(setup, coef=estimate.ACTIVATION_COEF * 1.2).total
        write_trial(sweep, f"t{batch}", {"per_device_train_batch_size": batch},
                    {"sweeper/done": 1, "sweeper/device": "cuda", "sweeper/nvml_peak_used_mb": measured * 1024,
                     "sweeper/examples_seen": 400, "sweeper/train_s": 200.0})  # fmt: skip
    oom = {"params": {"per_device_train_batch_size": 16}, "reason": "oom", "batches_tried": [16, 8, 4, 2, 1]}
    (sweep / preflight.INFEASIBLE_FILE).write_text(json.dumps([oom]))
    text = dry(spec)
    assert f"activation coefficient {estimate.ACTIVATION_COEF * 1.2:.3g} refit from 2 measured trial(s)" in text
    assert "throughput measured in earlier trials of this sweep" in text  # 400 examples / 200 s = 2 per s
    assert "Predicted GPU-hours: 0.722" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [r[-2:] for r in rows][2] == ["OOM", "before"]  # batch 16 ran out of memory at every batch before
    assert [r[3] for r in rows] == ["12.9", "35.1", "64.6"]  # re-predicted with the refit coefficient


def test_infeasible_records_accumulate_once(tmp_path: Path) -> None:
    rows = [{"params": {"per_device_train_batch_size": 16}, "reason": "preflight"}]
    preflight.record_infeasible(tmp_path, rows)
    preflight.record_infeasible(tmp_path, rows + [{"params": {"learning_rate": 1.0}, "reason": "oom"}])
    assert [r["reason"] for r in preflight.read_infeasible(tmp_path)] == ["preflight", "oom"]
    preflight.record_infeasible(tmp_path / "empty", [])
    assert not (tmp_path / "empty").exists()  # nothing infeasible, nothing written


def test_oom_trials_become_infeasible_rows(tmp_path: Path) -> None:
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "x"}))
    write_trial(tmp_path, "a_1", {"per_device_train_batch_size": 2}, {"sweeper/oom": 1})
    attempts = [{"attempt": 1, "per_device_train_batch_size": 2, "status": "oom"},
                {"attempt": 2, "per_device_train_batch_size": 1, "status": "oom"}]  # fmt: skip
    (tmp_path / "a_1" / "attempts.json").write_text(json.dumps(attempts))
    write_trial(tmp_path, "b_2", {"per_device_train_batch_size": 1}, {"sweeper/done": 1})
    rows = preflight.oom_rows(load_sweep(tmp_path))
    assert rows == [{"params": {"per_device_train_batch_size": 2}, "reason": "oom", "trial_id": "a_1",
                     "batches_tried": [2, 1]}]  # fmt: skip


def test_an_oom_row_rules_out_the_same_memory_settings_at_any_learning_rate() -> None:
    after_halving = [{"params": {"per_device_train_batch_size": 8, "max_length": 1024, "learning_rate": 1e-5},
                      "reason": "oom", "batches_tried": [8, 4, 2, 1]}]  # fmt: skip
    assert preflight.ruled_out_by({"per_device_train_batch_size": 2, "max_length": 1024, "learning_rate": 5e-4},
                                  after_halving) is after_halving[0]  # fmt: skip
    assert preflight.ruled_out_by({"per_device_train_batch_size": 2, "max_length": 512, "learning_rate": 5e-4},
                                  after_halving) is None  # shorter sequences: another memory setting  # fmt: skip
    no_retry = [{"params": {"per_device_train_batch_size": 8, "beta": 0.1}, "reason": "oom", "batches_tried": [8]}]
    assert preflight.ruled_out_by({"per_device_train_batch_size": 16, "beta": 0.5}, no_retry) is no_retry[0]
    assert preflight.ruled_out_by({"per_device_train_batch_size": 4, "beta": 0.5}, no_retry) is None  # may fit
    over_budget = [{"params": {"per_device_train_batch_size": 8}, "reason": "preflight"}]
    assert preflight.ruled_out_by({"per_device_train_batch_size": 8}, over_budget) is None  # only measured OOMs


def bayes_searcher(tmp_path: Path, infeasible: list[dict[str, Any]], **resources: Any) -> Any:
    from sweeper.prune.study import build_gate
    from sweeper.tune import raytune

    spec = parse_spec({
        "name": "b", "method": "bayes", "run_cap": 30, "seed": 0,
        "model": {"name_or_path": "builtin:tiny-mistral"}, "data": {"path": "builtin:synthetic", "max_length": 96},
        "parameters": {"per_device_train_batch_size": {"values": [1, 2, 256]},
                       "learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}},
        "training": {"max_steps": 8}, "resources": {"gpus_per_trial": 0, **resources},
    })  # fmt: skip
    plan = compile_plan(spec, 200, 80.0, f"sqlite:///{tmp_path / 'optuna.db'}", infeasible)
    assert plan.gate is not None
    return raytune.study_searcher(plan), build_gate(plan.gate).study


def test_bayes_never_proposes_what_ran_out_of_memory(tmp_path: Path) -> None:
    """Batch 2 ran out of memory in an earlier launch (oom: fail), which rules out batch 2 and 256 at any learning
    rate. TPE proposes; the searcher runs only batch 1 and tells the study the rest as PRUNED with the reason;
    when batch 1 runs out of memory too, the search space is exhausted and the sweep ends."""
    import optuna
    from ray.tune.search import Searcher

    earlier = [{"params": {"per_device_train_batch_size": 2, "learning_rate": 3e-4}, "reason": "oom",
                "batches_tried": [2]}]  # fmt: skip
    searcher, study = bayes_searcher(tmp_path, earlier, oom="fail")
    proposed = [searcher.suggest(f"t{i}")["params"] for i in range(6)]
    assert {p["per_device_train_batch_size"] for p in proposed} == {1}
    assert len({p["learning_rate"] for p in proposed}) == 6  # the learning rate is still searched
    skipped = [t for t in study.trials if "sweeper_infeasible" in t.user_attrs]
    assert {t.params["per_device_train_batch_size"] for t in skipped} <= {2, 256} and skipped
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in skipped)
    assert all("ran out of memory at every batch before" in t.user_attrs["sweeper_infeasible"] for t in skipped)
    searcher.on_trial_complete("t0", {"sweeper/oom": 1})  # batch 1 out of memory too: nothing is left
    assert searcher.suggest("t6") == Searcher.FINISHED


def test_bayes_skips_proposals_over_the_gpu_with_preflight_skip(tmp_path: Path) -> None:
    """Batch 256 is predicted at 1.6 GB, above a 1.2 GB GPU: with preflight: skip it is never run."""
    searcher, study = bayes_searcher(tmp_path, [], gpu_memory_gb=1.2, preflight="skip")
    proposed = [searcher.suggest(f"t{i}")["params"] for i in range(12)]
    assert {p["per_device_train_batch_size"] for p in proposed} <= {1, 2}
    reasons = {t.user_attrs["sweeper_infeasible"] for t in study.trials if "sweeper_infeasible" in t.user_attrs}
    assert reasons == {"predicted 1.6 GB > resources.gpu_memory_gb 1.2 (preflight: skip)"}


def test_infeasible_reason_is_a_pure_rule_over_the_plan(tmp_path: Path) -> None:
    # the rule the bayes searcher applies to each proposal (no Ray, no Optuna)
    oom = [{"params": {"per_device_train_batch_size": 8}, "reason": "oom", "trial_id": "t1", "batches_tried": [8]}]
    warn = compile_plan(mistral_spec(tmp_path, preflight="warn"))
    skip = compile_plan(mistral_spec(tmp_path, preflight="skip"))
    assert preflight.infeasible_reason(warn, {"per_device_train_batch_size": 2}, oom) is None
    assert "ran out of memory at every batch before (t1)" in str(
        preflight.infeasible_reason(warn, {"per_device_train_batch_size": 16}, oom)
    )  # a larger batch than one that ran out of memory
    assert preflight.infeasible_reason(warn, {"per_device_train_batch_size": 16}, []) is None  # warn: it runs
    assert preflight.infeasible_reason(skip, {"per_device_train_batch_size": 16}, []) == (
        "predicted 54.9 GB > resources.gpu_memory_gb 40 (preflight: skip)"
    )


def test_an_oom_row_rules_out_every_batch_after_halving_retries(tmp_path: Path) -> None:
    trial = compile_plan(mistral_spec(tmp_path)).trials[1]  # batch 8
    assert preflight.oom_row(trial, "t2", "retry_halved")["batches_tried"] == [1]  # retried down to batch 1
    assert preflight.oom_row(trial, "t2", "fail")["batches_tried"] == [8]  # only its own batch was tried


def test_the_seed_setup_spec_reproduces_the_seeds_memory_story() -> None:
    """sweeps/seed_2024.yaml (separate 4-bit reference, no double quantization, eager attention): the dry run
    is the seed's setup on today's TRL, puts batch 8 in the seed's reading and flags batch 16, which ran out of
    memory on its 80 GB card; batch 2 comes out below the seed's 25-30 GB by the log-probs alone."""
    text = dry(load_spec(ROOT / "sweeps" / "seed_2024.yaml"))
    rows = {int(r[1]): r for r in (line.split() for line in text.splitlines()) if r and r[0] in ("1", "2", "3")}
    gb = {batch: float(r[3]) for batch, r in rows.items()}
    for batch, shown in gb.items():  # the seed's setup with one change: TRL >= 1.0's chunked log-probs
        today = estimate.predict(replace(estimate.SEED, micro_batch=batch, logits="chunked")).total
        assert shown == pytest.approx(today, abs=0.05), batch
        early_2024 = estimate.predict(replace(estimate.SEED, micro_batch=batch)).total  # full fp32 logits
        assert early_2024 - today > 1.5 * batch / 2, batch  # what the chunked log-probs save
    assert gb[2] < 25 and 50 <= gb[8] <= 65 and gb[16] > 80
    assert rows[16][-1] == "OVER" and "1 trial(s) whose upper end is over it" in text
    assert "eager attention (heads x seq^2 probabilities kept)" in text and "reference separate" in text


def test_the_over_flag_reads_the_upper_end_of_the_band() -> None:
    spec = load_spec(ROOT / "sweeps" / "seed_2024.yaml")
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpu_memory_gb": 55})})
    batch8 = next(t for t in compile_plan(spec).trials if t.params["per_device_train_batch_size"] == 8)
    assert batch8.predicted_gb == 50.7 and batch8.predicted_band == (43.1, 58.3)
    assert batch8.over  # 50.7 fits a 55 GB card, its upper end 58.3 does not
    low, high = estimate.COEF_BAND
    assert low < estimate.ACTIVATION_COEF < high
