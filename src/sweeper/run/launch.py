"""Launching a sweep: spec → plan → prepared data → Ray Tune → trials/<name>/ → reports/<name>.md.

Light at import time: torch, transformers and ray are imported inside the steps that need them,
so ``--dry-run`` and spec errors are instant.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sweeper.config.spec import Spec, load_spec, spec_hash
from sweeper.errors import SweeperError, TrialsError
from sweeper.plan import estimate, never_prunes, preflight, pruning_metric
from sweeper.plan.compile import SweepPlan, compile_plan
from sweeper.plan.space import n_trials, swept_names
from sweeper.records.schema import SweepMeta
from sweeper.records.store import SWEEP_FILE, SweepRecord, best_trial, load_sweep, write_json
from sweeper.records.tracking import check_tracking, trackers_for
from sweeper.records.versions import package_versions
from sweeper.report.markdown import write_report
from sweeper.report.summary import beta_scaled
from sweeper.run.phases import Phases
from sweeper.tune.cluster import copy_from_storage, max_failures

VERSIONED = ("sweeper", "torch", "transformers", "trl", "peft", "bitsandbytes", "ray", "optuna", "datasets")


def plan_table(plan: SweepPlan, infeasible: list[dict[str, Any]] | None = None) -> list[str]:
    """Aligned lines: one per trial, its parameter values, effective batch, predicted GPU peak and a flag."""
    spec = plan.spec
    names = list(spec.parameters)
    head = ["#", *names, "effective batch", "predicted GB (band)", "flag"]
    oom_before = [r["params"] for r in infeasible or [] if r.get("reason") == "oom"]
    over = "skipped" if spec.resources.preflight == "skip" else "OVER"
    rows = []
    for i, p in enumerate(plan.trials, 1):
        flag = "OOM before" if p.params in oom_before else (over if p.over else "")
        gb = "?" if p.predicted_gb is None else f"{p.predicted_gb:.1f}"
        if p.predicted_band is not None:
            gb += f" ({p.predicted_band[0]:.1f}-{p.predicted_band[1]:.1f})"
        rows.append([str(i), *[_cell(p.params[n]) for n in names], str(p.effective_batch), gb, flag])
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]


INFERRED = ", inferred from its name: set metric.goal to insist"


def describe(spec: Spec, spec_path: Path) -> list[str]:
    model, data = spec.model, spec.data
    length = "max_steps" if spec.training.max_steps > 0 else "num_train_epochs"
    shown = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "optim",
             "lr_scheduler_type", "beta", length)  # fmt: skip
    fixed = {k: getattr(spec.training, k) for k in shown if k not in spec.parameters}
    lines = [
        f"Sweep '{spec.name}' from {spec_path}: method {spec.method}, {n_trials(spec)} trial(s), "
        f"metric {spec.metric.name} ({spec.metric.goal}{INFERRED if spec.metric.goal_inferred else ''})",
        f"  model {model.name_or_path} (quantization {model.quantization}, reference {model.reference}, "
        f"LoRA r={model.lora.r}), "
        f"data {data.path} ({data.format}, max_length {data.max_length})",
        "  fixed: " + ", ".join(f"{k} {_cell(v)}" for k, v in fixed.items()),
    ]
    et = spec.early_terminate
    if et is not None:
        pruner = (
            "W&B hyperband (as Optuna's HyperbandPruner)"
            if et.type == "hyperband"
            else ("sweeper peer" if et.pruner == "peer" else f"Optuna {et.pruner}")
        )
        on = pruning_metric(spec)
        held = " (held-out, every eval_steps)" if on.startswith("eval_") else ""
        args = et.arguments
        rule = (f" (percentile {args.get('percentile', 50.0):g})" if et.pruner == "peer" else "") + (
            f", warm-up {et.warmup_fraction:.0%}, on_prune {et.on_prune}" if et.type == "optuna" else ""
        )
        rule += ", breadth first" if et.breadth_first else ""
        lines.append(f"  early_terminate: {pruner}{rule} on {on}{held} per {et.step_unit} seen, "
                     f"margin-hacking guard: {et.guard}")  # fmt: skip
        if spec.training.eval_steps is None and not on.startswith("eval_"):
            lines.append(f"  tip: set training.eval_steps to prune on held-out eval_{on}: train margins at "
                         f"per-device batch {spec.training.per_device_train_batch_size} jump from step to step; it "
                         "costs one pass over the held-out rows per evaluation (the dry run counts it)")  # fmt: skip
    if "beta" in swept_names(spec) and beta_scaled(spec.metric.name):
        lines.append(f"  tip: beta is swept and {spec.metric.name} is beta × a log-ratio: trials of different beta "
                     f"are not comparable on it (the report also ranks them by {spec.metric.name} ÷ beta)")  # fmt: skip
    return lines


def data_lines(spec: Spec) -> tuple[list[str], int | None]:
    """The dry run reads the data it can read without downloading: a local file or a builtin set. A missing,
    unreadable or empty file, or one with no usable row, raises DataError (one line, exit 2) here. Returns the
    lines and the training rows it leaves (None for a Hub dataset)."""
    import math

    from sweeper.data.rows import is_local_source, load_valid_rows

    data = spec.data
    if not is_local_source(data.path):
        return [f"  data: Hub dataset {data.path} ({data.format}): read at launch, not by the dry run"], None
    rows, report = load_valid_rows(data.path, data.format, data.split, data.columns, data.name)
    how = "detected" if data.format == "auto" else "as set"
    n = min(report.n_valid, data.max_rows or report.n_valid)
    n_test = math.ceil(data.test_size * n) if data.test_size < 1 else int(data.test_size)
    from sweeper.train.prepare import dry_run_lengths

    lines = [f"  data: {report.summary()}; format {report.format} ({how})", *dry_run_lengths(spec, rows, report.format)]
    steps = spec.training.max_steps
    if spec.training.eval_steps and n_test and steps > 0:
        evals = steps // spec.training.eval_steps
        lines.append(f"  held-out evaluation in training: {n_test} rows x {evals} evaluation(s) per trial = "
                     f"{n_test * evals} pairs scored (policy and reference, chosen and rejected: ~4 forward passes "
                     "each)")  # fmt: skip
    return lines, max(0, n - n_test)


def dry_run(spec: Spec, spec_path: Path, out: TextIO) -> None:
    for line in describe(spec, spec_path):
        print(line, file=out)
    lines, n_train = data_lines(spec)
    for line in lines:
        print(line, file=out)
    if n_train:
        warning = never_prunes(spec, compile_plan(spec, n_train).budget)  # type: ignore[arg-type]
        if warning:
            print("  " + warning, file=out)
    if spec.method == "bayes":
        print(f"Optuna TPE proposes up to {spec.run_cap} trials from:", file=out)
        for name, p in spec.parameters.items():
            print(f"  {name}: {p.model_dump(exclude_none=True)}", file=out)
        return
    earlier = _earlier_sweep(spec)
    coef, n_measured = preflight.calibrate_from(spec, earlier)
    plan = compile_plan(spec, coef=coef)
    for line in plan_table(plan, _infeasible(earlier)):
        print("  " + line, file=out)
    for line in preflight_lines(plan, n_measured, earlier):
        print(line, file=out)


def preflight_lines(plan: SweepPlan, n_measured: int, earlier: SweepRecord | None) -> list[str]:
    """What the preflight found: the GPU budget, over-budget trials, the calibration and the cost line."""
    spec, planned, coef = plan.spec, plan.trials, plan.coef
    n_over = sum(p.over for p in planned)
    budget = spec.resources.gpu_memory_gb
    lines = [f"Preflight: peak GPU memory predicted from the model's shape for one {budget:g} GB GPU "
             f"(resources.gpu_memory_gb), with a band (low-high: the activation coefficient that fits the low and "
             f"the high end of the seed's readings); {n_over} trial(s) whose upper end is over it"
             + (f", {'skipped' if spec.resources.preflight == 'skip' else 'run anyway (preflight: warn)'}"
                if n_over else "")]  # fmt: skip
    if planned:
        lines.append(f"  the prediction assumes: {estimate.assumptions(planned[0].settings)}")
    if any(p.predicted_gb is None for p in planned):
        lines.append(f"  unknown model shape for {spec.model.name_or_path}: give a local folder with config.json")
    if n_measured:
        lines.append(
            f"  activation coefficient {coef:.3g} refit from {n_measured} measured trial(s) of "
            f"{earlier.path if earlier else '?'} (default {estimate.ACTIVATION_COEF:g})"
        )
    lines.append(preflight.cost_line(plan, preflight.measured_throughput(earlier)))
    return lines


def _earlier_sweep(spec: Spec) -> SweepRecord | None:
    """trials/<name> of an earlier launch of this sweep, for measured peaks and throughput."""
    try:
        return load_sweep(Path(spec.output.trials_dir) / spec.name)
    except SweeperError:
        return None


def _infeasible(sweep: SweepRecord | None) -> list[dict[str, Any]]:
    return preflight.read_infeasible(sweep.path) if sweep is not None else []


@dataclass
class Launch:
    """One launch as it goes: the spec and where it writes, what the preflight found, where it prints."""

    spec: Spec
    spec_path: Path
    address: str | None
    verbose: bool
    out: TextIO
    earlier: SweepRecord | None = None  # an earlier launch of this sweep: measured peaks, OOM configs
    coef: float = estimate.ACTIVATION_COEF  # the memory estimate's activation coefficient (refit from earlier)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # left out by the preflight (infeasible.json)
    phases: Phases = field(default_factory=Phases)  # where the wall time goes

    @property
    def sweep_dir(self) -> Path:
        return Path(self.spec.output.trials_dir) / self.spec.name

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def launch(spec_path: str | Path, address: str | None = None, dry: bool = False, verbose: bool = False,
           out: TextIO | None = None) -> Path | None:  # fmt: skip
    """Run a sweep; return the report's path (None for a dry run)."""
    out = out or sys.stdout
    spec_path = Path(spec_path)
    spec = absolute_paths(load_spec(spec_path))
    if dry:
        dry_run(spec, spec_path, out)
        return None
    run = Launch(spec, spec_path, address, verbose, out)
    check_before_data(run)
    with run.phases.time("data"):
        prepared = prepare(run)  # bad data stops here: nothing is written under trials/ before this line
    meta = record_start(run, prepared)
    run_trials(run, prepared, meta)
    return finish_sweep(spec, run.sweep_dir, address, out, "finished", run.phases)


def check_before_data(run: Launch) -> None:
    """What can be checked from the spec alone: the plan, multiple-choice sets, the preflight, the trackers."""
    spec = run.spec
    for line in describe(spec, run.spec_path):
        run.say(line)
    if spec.evaluation is not None:  # a bad multiple-choice set fails now, not after the trials
        from sweeper.run.evalrun import check_sets

        check_sets(spec.evaluation)
    run.earlier = _earlier_sweep(spec)
    run.coef, n_measured = preflight.calibrate_from(spec, run.earlier)
    run.skipped = run_preflight(compile_plan(spec, coef=run.coef), n_measured, run.earlier, run.out)
    for line in check_tracking(spec):
        run.say(line)


def prepare(run: Launch) -> Any:
    """The sweep's rows, loaded, validated, split and rendered once (train/prepare)."""
    run.say("Preparing data and tokenizer ...")
    from sweeper.train.prepare import length_lines, prepare_data

    prepared = prepare_data(run.spec)
    summary = prepared.summary()
    how = "detected" if run.spec.data.format == "auto" else "as set"
    run.say(f"  {summary['rows']}; format {summary['format']} ({how}); {summary['n_train']} train / "
            f"{summary['n_test']} held out; system prompt via {summary['system_turn']}")  # fmt: skip
    for line in length_lines(prepared.lengths):
        run.say(line)
    return prepared


def record_start(run: Launch, prepared: Any) -> dict[str, Any]:
    """trials/<name>/ for this launch (an earlier one set aside): infeasible.json, the rows, sweep.json."""
    from sweeper.train.prepare import save_prepared

    sweep_dir = run.sweep_dir
    moved = set_aside(sweep_dir)
    if moved:
        run.say(f"An earlier sweep '{run.spec.name}' was moved to {moved}")
    if run.skipped:
        preflight.record_infeasible(sweep_dir, run.skipped)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    save_prepared(prepared, sweep_dir / "data")
    meta = sweep_meta(run.spec, run.spec_path, prepared.summary())
    meta["n_skipped"] = len(run.skipped)
    write_json(sweep_dir / SWEEP_FILE, meta)
    return meta


def run_trials(run: Launch, prepared: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Start Ray, compile the plan with the training rows known, run it through Tune; sweep.json keeps the times."""
    from sweeper.tune import raytune, runtime

    spec, address, sweep_dir = run.spec, run.address, run.sweep_dir
    started = time.monotonic()
    run.say(f"Starting Ray ({'cluster ' + address if address else 'local, on 127.0.0.1'}) ...")
    try:
        with run.phases.time("Ray start"):
            resources = runtime.init_ray(address, spec.resources.num_cpus, run.verbose)
        gpus = resolve_gpus(spec, resources)
        meta["host"]["ray"] = {"address": address or "local", "resources": resources, "gpus_per_trial": gpus}
        meta["host"]["hardware"] = hardware_text(resources)
        run.say(f"  Ray up in {time.monotonic() - started:.1f} s: {hardware_text(resources)}; "
                f"{spec.resources.cpus_per_trial:g} CPU and {gpus:g} GPU per trial")  # fmt: skip
        write_json(sweep_dir / SWEEP_FILE, meta)
        # the spec compiled once, now that the training rows are known: planned lengths, budget, the study;
        # TPE never proposes what ran out of memory before (preflight.ruled_out_by reads the OOM rows among them)
        plan = compile_plan(spec, len(prepared.train), prepared.tokens_per_example, study_storage(sweep_dir),
                            _infeasible(run.earlier), run.coef).without(r["params"] for r in run.skipped)  # fmt: skip
        if plan.budget is not None and (warning := never_prunes(spec, plan.budget)):
            run.say("  " + warning)
        failures = max_failures(spec, address)
        if failures:
            run.say(f"  a trial whose node or worker dies reruns from scratch, up to {failures} time(s) "
                    "(resources.max_failures)")  # fmt: skip
        counts = raytune.run_sweep(plan, prepared.train, prepared.test, gpus, max_failures=failures,
                                   trackers=trackers_for(spec, sweep_dir))  # fmt: skip
        run.phases.add("shared references", counts.get("references_s", 0.0))
        run.phases.add("trials", counts.get("wall_s", 0.0))
        return counts
    finally:
        meta["finished_at"] = utc_now()
        meta["wall_s"] = round(time.monotonic() - started, 1)  # finish_sweep sets the whole command's
        write_json(sweep_dir / SWEEP_FILE, meta)
        runtime.shutdown_ray()


def finish_sweep(spec: Spec, sweep_dir: Path, address: str | None, out: TextIO, verb: str, phases: Phases) -> Path:
    """After the trials (launch or resume): records, calibration, evaluation, report, tracker, summary lines; the
    time of every phase goes into sweep.json and the last line."""
    copy_from_storage(spec, sweep_dir)
    sweep = load_sweep(sweep_dir)
    preflight.record_infeasible(sweep_dir, preflight.oom_rows(sweep))
    for line in calibration_lines(spec, sweep):
        print(line, file=out)
    if spec.evaluation is not None:  # held-out evidence for the winner, before the report names it
        from sweeper.run.evalrun import evaluate_sweep

        try:
            with phases.time("evaluation"):
                sweep = evaluate_sweep(sweep_dir, spec.evaluation, address, Path(spec.output.reports_dir), out)
        except SweeperError as exc:  # the trials stand; the report is written without the evaluation
            print(f"Evaluation failed: {exc}; rerun: python -m sweeper evaluate {sweep_dir}", file=out)
    sweep = record_phases(sweep_dir, phases)  # what the report shows (the report's own time is in the last line)
    with phases.time("report"):
        report = write_report(sweep, Path(spec.output.reports_dir))
    best = best_trial(sweep, spec.metric.name, spec.metric.goal)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(sweep.by_status().items()))
    trackers_for(spec, sweep_dir).sweep({"statuses": sweep.by_status(), "best": best.trial_id if best else None,
                                         "wall_s": phases.total, **phases.seconds}, report)  # fmt: skip
    print(f"Sweep '{spec.name}' {verb} {phases.text()}: {statuses}", file=out)
    if best is not None:
        print(f"Best trial {best.trial_id} ({best.params}): {spec.metric.name} = {best.value(spec.metric.name):.4g}",
              file=out)  # fmt: skip
    print(f"Trials: {sweep_dir}", file=out)
    print(f"Report: {report}", file=out)
    if not sweep.by_status().get("completed"):
        raise TrialsError(f"sweep '{spec.name}': no trial completed ({statuses or 'no trials'}): the report {report} "
                          f"and each trial's error.txt under {sweep_dir} say why")  # fmt: skip
    return report


def record_phases(sweep_dir: Path, phases: Phases) -> SweepRecord:
    """sweep.json with the phases so far and the wall time since the command started; the sweep read back."""
    meta = json.loads((sweep_dir / SWEEP_FILE).read_text(encoding="utf-8"))
    meta["phases"] = [[name, s] for name, s in phases.seconds.items()]  # in order (sweep.json sorts keys)
    meta["wall_s"] = phases.total
    write_json(sweep_dir / SWEEP_FILE, meta)
    return load_sweep(sweep_dir)


def study_storage(sweep_dir: Path) -> str:
    """The sweep's Optuna study (pruning and bayes): trials/<name>/optuna.db."""
    return f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"


def run_preflight(plan: SweepPlan, n_measured: int, earlier: SweepRecord | None, out: TextIO) -> list[dict[str, Any]]:
    """Print over-budget trials; with preflight: skip, return them (and configs that ran out of memory at every
    batch in the earlier launch) as the infeasible rows to record and leave out."""
    spec = plan.spec
    if spec.method == "bayes":
        return []
    for line in preflight_lines(plan, n_measured, earlier):
        print(line, file=out)
    for i, p in enumerate(plan.trials, 1):
        if p.over:
            print(f"  trial {i} {p.params}: predicted {p.predicted_gb:.1f} GB", file=out)
    if spec.resources.preflight != "skip":
        return []
    skipped = preflight.infeasible_rows(plan.trials, spec.resources.gpu_memory_gb)
    skipped += [r for r in _infeasible(earlier) if r.get("reason") == "oom"]
    if not plan.without(r["params"] for r in skipped).trials:
        raise SweeperError(
            f"resources.preflight: every trial is predicted above resources.gpu_memory_gb "
            f"({spec.resources.gpu_memory_gb:g} GB) or ran out of memory before: lower "
            "per_device_train_batch_size or max_length, or set preflight: warn to run them anyway"
        )
    return skipped


def calibration_lines(spec: Spec, sweep: SweepRecord) -> list[str]:
    """After the trials: refit the activation coefficient from measured GPU peaks and re-predict."""
    coef, n = preflight.calibrate_from(spec, sweep)
    if not n:
        return ["Memory: no GPU peaks measured (CPU trials): the estimator was not recalibrated"]
    lines = [f"Memory: activation coefficient refit from {n} measured trial(s): "
             f"{estimate.ACTIVATION_COEF:g} -> {coef:.3g}; re-predicted peaks:"]  # fmt: skip
    before, after = compile_plan(spec).trials, compile_plan(spec, coef=coef).trials
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


def sweep_meta(spec: Spec, spec_path: Path, data_summary: dict[str, Any]) -> SweepMeta:
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
        "started_at": utc_now(),
        "finished_at": None,
    }


def versions() -> dict[str, str]:
    return package_versions(VERSIONED)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
