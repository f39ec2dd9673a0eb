"""Launching a sweep: spec → plan → prepared data → Ray Tune → trials/<name>/ → reports/<name>.md.

Light at import time: torch, transformers and ray are imported inside the steps that need them,
so ``--dry-run`` and spec errors are instant.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from sweeper.config.spec import Spec, load_spec, spec_hash
from sweeper.errors import SweeperError
from sweeper.plan import estimate, preflight
from sweeper.plan.space import effective_batch, expand, n_trials, swept_names, trial_settings
from sweeper.records.store import SWEEP_FILE, SweepRecord, best_trial, load_sweep, write_json
from sweeper.records.tracking import check_tracking, trackers_for
from sweeper.report.markdown import write_report
from sweeper.report.summary import beta_scaled
from sweeper.tune.cluster import copy_from_storage, max_failures

VERSIONED = ("sweeper", "torch", "transformers", "trl", "peft", "bitsandbytes", "ray", "optuna", "datasets")


def plan_table(spec: Spec, configs: list[dict[str, Any]], planned: list[preflight.Planned],
               infeasible: list[dict[str, Any]] | None = None) -> list[str]:  # fmt: skip
    """Aligned lines: one per trial, its parameter values, effective batch, predicted GPU peak and a flag."""
    names = list(spec.parameters)
    head = ["#", *names, "effective batch", "predicted GB", "flag"]
    oom_before = [r["params"] for r in infeasible or [] if r.get("reason") == "oom"]
    over = "skipped" if spec.resources.preflight == "skip" else "OVER"
    rows = []
    for i, (params, p) in enumerate(zip(configs, planned, strict=True), 1):
        training = trial_settings(spec, params)["training"]
        flag = "OOM before" if params in oom_before else (over if p.over else "")
        gb = "?" if p.predicted_gb is None else f"{p.predicted_gb:.1f}"
        rows.append([str(i), *[_cell(params[n]) for n in names], str(effective_batch(training)), gb, flag])
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]


def describe(spec: Spec, spec_path: Path) -> list[str]:
    model, data = spec.model, spec.data
    length = "max_steps" if spec.training.max_steps > 0 else "num_train_epochs"
    shown = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "optim",
             "lr_scheduler_type", "beta", length)  # fmt: skip
    fixed = {k: getattr(spec.training, k) for k in shown if k not in spec.parameters}
    lines = [
        f"Sweep '{spec.name}' from {spec_path}: method {spec.method}, {n_trials(spec)} trial(s), "
        f"metric {spec.metric.name} ({spec.metric.goal})",
        f"  model {model.name_or_path} (quantization {model.quantization}, reference {model.reference}, "
        f"LoRA r={model.lora.r}), "
        f"data {data.path} ({data.format}, max_length {data.max_length})",
        "  fixed: " + ", ".join(f"{k} {_cell(v)}" for k, v in fixed.items()),
    ]
    et = spec.early_terminate
    if et is not None:
        pruner = "W&B hyperband (as Optuna's HyperbandPruner)" if et.type == "hyperband" else f"Optuna {et.pruner}"
        lines.append(f"  early_terminate: {pruner} on {spec.metric.name} per {et.step_unit} seen, "
                     f"margin-hacking guard: {et.guard}")  # fmt: skip
        if spec.training.eval_steps and not spec.metric.name.startswith("eval_"):
            lines.append(f"  tip: evaluation runs every {spec.training.eval_steps} steps; pruning on held-out "
                         f"eval_{spec.metric.name} is less noisy than on train {spec.metric.name}")  # fmt: skip
    if "beta" in spec.parameters and beta_scaled(spec.metric.name):
        lines.append(f"  tip: beta is swept and {spec.metric.name} is beta × a log-ratio: trials of different beta "
                     f"are not comparable on it (the report also ranks them by {spec.metric.name} ÷ beta)")  # fmt: skip
    return lines


def dry_run(spec: Spec, spec_path: Path, out: TextIO) -> None:
    for line in describe(spec, spec_path):
        print(line, file=out)
    if spec.method == "bayes":
        print(f"Optuna TPE proposes up to {spec.run_cap} trials from:", file=out)
        for name, p in spec.parameters.items():
            print(f"  {name}: {p.model_dump(exclude_none=True)}", file=out)
        return
    configs = expand(spec)
    earlier = _earlier_sweep(spec)
    coef, n_measured = preflight.calibrate_from(spec, earlier)
    planned = preflight.plan(spec, configs, coef)
    for line in plan_table(spec, configs, planned, _infeasible(earlier)):
        print("  " + line, file=out)
    for line in preflight_lines(spec, configs, planned, coef, n_measured, earlier):
        print(line, file=out)


def preflight_lines(spec: Spec, configs: list[dict[str, Any]], planned: list[preflight.Planned], coef: float,
                    n_measured: int, earlier: SweepRecord | None) -> list[str]:  # fmt: skip
    """What the preflight found: the GPU budget, over-budget trials, the calibration and the cost line."""
    n_over = sum(p.over for p in planned)
    budget = spec.resources.gpu_memory_gb
    lines = [f"Preflight: peak GPU memory predicted from the model's shape for one {budget:g} GB GPU "
             f"(resources.gpu_memory_gb); {n_over} trial(s) over it"
             + (f", {'skipped' if spec.resources.preflight == 'skip' else 'run anyway (preflight: warn)'}"
                if n_over else "")]  # fmt: skip
    if any(p.predicted_gb is None for p in planned):
        lines.append(f"  unknown model shape for {spec.model.name_or_path}: give a local folder with config.json")
    if n_measured:
        lines.append(
            f"  activation coefficient {coef:.3g} refit from {n_measured} measured trial(s) of "
            f"{earlier.path if earlier else '?'} (default {estimate.ACTIVATION_COEF:g})"
        )
    lines.append(preflight.cost_line(spec, configs, preflight.measured_throughput(earlier)))
    return lines


def _earlier_sweep(spec: Spec) -> SweepRecord | None:
    """trials/<name> of an earlier launch of this sweep, for measured peaks and throughput."""
    try:
        return load_sweep(Path(spec.output.trials_dir) / spec.name)
    except SweeperError:
        return None


def _infeasible(sweep: SweepRecord | None) -> list[dict[str, Any]]:
    return preflight.read_infeasible(sweep.path) if sweep is not None else []


def launch(spec_path: str | Path, address: str | None = None, dry: bool = False, verbose: bool = False,
           out: TextIO | None = None) -> Path | None:  # fmt: skip
    """Run a sweep; return the report's path (None for a dry run)."""
    out = out or sys.stdout
    spec_path = Path(spec_path)
    spec = absolute_paths(load_spec(spec_path))
    configs = expand(spec)
    if dry:
        dry_run(spec, spec_path, out)
        return None
    for line in describe(spec, spec_path):
        print(line, file=out)
    if spec.evaluation is not None:  # a bad multiple-choice set fails now, not after the trials
        from sweeper.run.evalrun import check_sets

        check_sets(spec.evaluation)
    sweep_dir = Path(spec.output.trials_dir) / spec.name
    earlier = _earlier_sweep(spec)
    configs, skipped = run_preflight(spec, configs, earlier, out)
    for line in check_tracking(spec):
        print(line, file=out)

    print("Preparing data and tokenizer ...", file=out, flush=True)
    from sweeper.train.prepare import prepare_data, save_prepared

    prepared = prepare_data(spec)  # bad data stops here: nothing is written under trials/ before this line
    summary = prepared.summary()
    print(f"  {summary['rows']}; {summary['n_train']} train / {summary['n_test']} held out; "
          f"system prompt via {summary['system_turn']}", file=out)  # fmt: skip
    moved = set_aside(sweep_dir)
    if moved:
        print(f"An earlier sweep '{spec.name}' was moved to {moved}", file=out)
    if skipped:
        preflight.record_infeasible(sweep_dir, skipped)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    save_prepared(prepared, sweep_dir / "data")
    meta = sweep_meta(spec, spec_path, summary)
    meta["n_skipped"] = len(skipped)  # left out by the preflight (infeasible.json)
    write_json(sweep_dir / SWEEP_FILE, meta)

    from sweeper.tune import raytune, runtime

    started = time.monotonic()
    print(f"Starting Ray ({'cluster ' + address if address else 'local, on 127.0.0.1'}) ...", file=out, flush=True)
    try:
        resources = runtime.init_ray(address, spec.resources.num_cpus, verbose)
        gpus = resolve_gpus(spec, resources)
        meta["host"]["ray"] = {"address": address or "local", "resources": resources, "gpus_per_trial": gpus}
        meta["host"]["hardware"] = hardware_text(resources)
        print(f"  Ray up in {time.monotonic() - started:.1f} s: {hardware_text(resources)}; "
              f"{spec.resources.cpus_per_trial:g} CPU and {gpus:g} GPU per trial", file=out)  # fmt: skip
        write_json(sweep_dir / SWEEP_FILE, meta)
        gate = pruning_plan(spec, len(prepared.train), prepared.tokens_per_example, sweep_dir)
        if gate is not None and spec.method == "bayes":  # TPE never proposes what ran out of memory before
            gate["infeasible"] = _infeasible(earlier)  # preflight.ruled_out_by reads the OOM rows among them
        failures = max_failures(spec, address)
        if failures:
            print(f"  a trial whose node or worker dies reruns from scratch, up to {failures} time(s) "
                  "(resources.max_failures)", file=out)  # fmt: skip
        counts = raytune.run_sweep(spec, configs, prepared.train, prepared.test, Path(spec.output.trials_dir), gpus,
                                   gate=gate, max_failures=failures,
                                   trackers=trackers_for(spec, sweep_dir))  # fmt: skip
    finally:
        meta["finished_at"] = _now()
        meta["wall_s"] = round(time.monotonic() - started, 1)
        write_json(sweep_dir / SWEEP_FILE, meta)
        runtime.shutdown_ray()
    return finish_sweep(spec, sweep_dir, address, out, f"finished in {counts.get('wall_s', meta['wall_s'])} s",
                        {"wall_s": meta["wall_s"]})  # fmt: skip


def finish_sweep(spec: Spec, sweep_dir: Path, address: str | None, out: TextIO, headline: str,
                 summary: dict[str, Any]) -> Path:  # fmt: skip
    """After the trials (launch or resume): records, calibration, evaluation, report, tracker, summary lines."""
    copy_from_storage(spec, sweep_dir)
    sweep = load_sweep(sweep_dir)
    preflight.record_infeasible(sweep_dir, preflight.oom_rows(sweep))
    for line in calibration_lines(spec, expand(spec), sweep):
        print(line, file=out)
    if spec.evaluation is not None:  # held-out evidence for the winner, before the report names it
        from sweeper.run.evalrun import evaluate_sweep

        try:
            sweep = evaluate_sweep(sweep_dir, spec.evaluation, address, Path(spec.output.reports_dir), out)
        except SweeperError as exc:  # the trials stand; the report is written without the evaluation
            print(f"Evaluation failed: {exc}; rerun: python -m sweeper evaluate {sweep_dir}", file=out)
    report = write_report(sweep, Path(spec.output.reports_dir))
    best = best_trial(sweep, spec.metric.name, spec.metric.goal)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(sweep.by_status().items()))
    trackers_for(spec, sweep_dir).sweep({"statuses": sweep.by_status(), "best": best.trial_id if best else None,
                                         **summary}, report)  # fmt: skip
    print(f"Sweep '{spec.name}' {headline}: {statuses}", file=out)
    if best is not None:
        print(f"Best trial {best.trial_id} ({best.params}): {spec.metric.name} = {best.value(spec.metric.name):.4g}",
              file=out)  # fmt: skip
    print(f"Trials: {sweep_dir}", file=out)
    print(f"Report: {report}", file=out)
    return report


def pruning_plan(spec: Spec, n_train: int, tokens_per_example: float, sweep_dir: Path) -> dict[str, Any] | None:
    """Settings of the sweep's Optuna study, or None when neither pruning nor bayes needs one."""
    if spec.early_terminate is None and spec.method != "bayes":
        return None
    from sweeper.plan.budget import sweep_budget
    from sweeper.prune.study import gate_settings

    storage = f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
    return gate_settings(spec, storage, sweep_budget(spec, n_train, tokens_per_example))


def run_preflight(spec: Spec, configs: list[dict[str, Any]], earlier: SweepRecord | None,
                  out: TextIO) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Print over-budget trials; with preflight: skip, drop them (and configs that ran out of memory at every
    batch in the earlier launch). Returns the configs to run and the infeasible rows to record."""
    if spec.method == "bayes":
        return configs, []
    coef, n_measured = preflight.calibrate_from(spec, earlier)
    planned = preflight.plan(spec, configs, coef)
    for line in preflight_lines(spec, configs, planned, coef, n_measured, earlier):
        print(line, file=out)
    for i, p in enumerate(planned, 1):
        if p.over:
            print(f"  trial {i} {p.params}: predicted {p.predicted_gb:.1f} GB", file=out)
    if spec.resources.preflight != "skip":
        return configs, []
    skipped = preflight.infeasible_rows(planned, spec.resources.gpu_memory_gb)
    skipped += [r for r in _infeasible(earlier) if r.get("reason") == "oom"]
    keep = [c for c in configs if c not in [r["params"] for r in skipped]]
    if not keep:
        raise SweeperError(
            f"resources.preflight: every trial is predicted above resources.gpu_memory_gb "
            f"({spec.resources.gpu_memory_gb:g} GB) or ran out of memory before: lower "
            "per_device_train_batch_size or max_length, or set preflight: warn to run them anyway"
        )
    return keep, skipped


def calibration_lines(spec: Spec, configs: list[dict[str, Any]], sweep: SweepRecord) -> list[str]:
    """After the trials: refit the activation coefficient from measured GPU peaks and re-predict."""
    coef, n = preflight.calibrate_from(spec, sweep)
    if not n:
        return ["Memory: no GPU peaks measured (CPU trials): the estimator was not recalibrated"]
    lines = [f"Memory: activation coefficient refit from {n} measured trial(s): "
             f"{estimate.ACTIVATION_COEF:g} -> {coef:.3g}; re-predicted peaks:"]  # fmt: skip
    before = preflight.plan(spec, configs)
    after = preflight.plan(spec, configs, coef)
    for b, a in zip(before, after, strict=True):
        lines.append(f"  {b.params}: {b.predicted_gb} -> {a.predicted_gb} GB{' (over budget)' if a.over else ''}")
    return lines


def absolute_paths(spec: Spec) -> Spec:
    """Paths relative to the working directory, made absolute (Ray runs trials in their own folders)."""
    updates: dict[str, Any] = {}
    if Path(spec.model.name_or_path).exists():
        updates["model"] = spec.model.model_copy(update={"name_or_path": str(Path(spec.model.name_or_path).resolve())})
    if Path(spec.data.path).exists():
        updates["data"] = spec.data.model_copy(update={"path": str(Path(spec.data.path).resolve())})
    updates["output"] = spec.output.model_copy(
        update={
            "trials_dir": str(Path(spec.output.trials_dir).resolve()),
            "reports_dir": str(Path(spec.output.reports_dir).resolve()),
        }
    )
    return spec.model_copy(update=updates)


def set_aside(sweep_dir: Path) -> Path | None:
    """Keep an earlier sweep of the same name: move it to <name>-<timestamp> instead of mixing trials."""
    if not sweep_dir.exists() or not any(sweep_dir.iterdir()):
        return None
    stamp = datetime.fromtimestamp(sweep_dir.stat().st_mtime, UTC).strftime("%Y%m%d-%H%M%S")
    target = sweep_dir.with_name(f"{sweep_dir.name}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = sweep_dir.with_name(f"{sweep_dir.name}-{stamp}-{n}")
    sweep_dir.rename(target)
    return target


def resolve_gpus(spec: Spec, resources: dict[str, float]) -> float:
    gpus = spec.resources.gpus_per_trial
    if gpus is None:
        return 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    if gpus > 0 and resources.get("GPU", 0) < gpus:
        raise SweeperError(
            f"resources.gpus_per_trial: {gpus:g} GPU per trial asked, but the Ray cluster has "
            f"{resources.get('GPU', 0):g}: set gpus_per_trial to 0 for CPU or launch with --address on a GPU cluster"
        )
    return float(gpus)


def hardware_text(resources: dict[str, float]) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    text = f"{cpus:g} CPUs ({platform.machine()}, {platform.system()})"
    return text + (f", {gpus:g} GPUs" if gpus else ", no GPU")


def sweep_meta(spec: Spec, spec_path: Path, data_summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "spec_path": str(spec_path),
        "spec_hash": spec_hash(spec_path),
        "spec_text": spec_path.read_text(encoding="utf-8"),
        "spec": spec.model_dump(mode="json"),
        "metric": spec.metric.model_dump(),
        "swept": swept_names(spec),
        "n_planned": n_trials(spec),
        "data": data_summary,
        "versions": versions(),
        "git_commit": git_commit(),
        "host": {"hardware": f"{os.cpu_count()} CPUs ({platform.machine()})", "python": platform.python_version()},
        "started_at": _now(),
        "finished_at": None,
    }


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
