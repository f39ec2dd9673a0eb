"""Preflight: each planned trial's predicted GPU peak against the GPU's memory, and the sweep's GPU-hours and cost.

Used by ``launch --dry-run`` (a table) and by ``launch`` before Ray starts (``resources.preflight: warn``
prints over-budget trials, ``skip`` leaves them out and records them in ``trials/<name>/infeasible.json``).
Trials that ran out of memory at every batch size are recorded in the same file after the sweep.

Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.config.spec import Spec
from sweeper.plan import estimate
from sweeper.plan.settings import TrialSettings, recorded_settings
from sweeper.records.metrics import DEVICE, EXAMPLES_SEEN, PER_DEVICE_TRAIN_BATCH_SIZE, TRAIN_S
from sweeper.records.schema import InfeasibleRow
from sweeper.records.store import SweepRecord, read_json, write_json

if TYPE_CHECKING:
    from sweeper.plan.compile import SweepPlan, TrialPlan

INFEASIBLE_FILE = "infeasible.json"
# Rows of datasets whose size the dry run cannot count without downloading them.
KNOWN_DATASET_ROWS = {"Intel/orca_dpo_pairs": 12859, "builtin:synthetic": 256, "builtin:orca_dpo_pairs": 284}
# The seed's throughput: the six-config lr_grid (3 epochs of ~12.2k orca rows each, ~220k examples) took
# ~60 GPU-hours on A100s, i.e. ~1.0 DPO example per GPU-second for Mistral-7B at max_length 1536.
SEED_EXAMPLES_PER_S = 1.0


def examples_per_trial(spec: Spec, settings: TrialSettings) -> int | None:
    """DPO examples one trial trains on: max_steps x effective batch, else epochs x training rows."""
    training = settings.training
    if training.max_steps > 0:
        return training.max_steps * settings.effective_batch
    rows = dataset_rows(spec)
    if rows is None:
        return None
    test = spec.data.test_size
    n_train = rows - (int(test) if test >= 1 else round(rows * test))
    return int(float(training.num_train_epochs) * max(n_train, 0))


def dataset_rows(spec: Spec) -> int | None:
    """Rows of the data source, where known without loading it (known table or a local .jsonl/.json)."""
    path, rows = Path(spec.data.path), KNOWN_DATASET_ROWS.get(spec.data.path)
    if rows is None and path.is_file() and path.suffix == ".jsonl":
        with path.open(encoding="utf-8", errors="replace") as fh:
            rows = sum(1 for line in fh if line.strip())
    elif rows is None and path.is_file() and path.suffix == ".json":
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            rows = len(loaded) if isinstance(loaded, list) else None
        except (ValueError, RecursionError):  # bad JSON, not UTF-8, nested too deep: prepare_data says which
            rows = None
    if rows is not None and spec.data.max_rows is not None:
        rows = min(rows, spec.data.max_rows)
    return rows


def default_throughput(spec: Spec, settings: TrialSettings) -> float | None:
    """Examples per GPU-second scaled from the seed: compute grows with parameters x tokens per example."""
    shape = estimate.model_shape(spec.model.name_or_path)
    if shape is None:
        return None
    scale = (estimate.MISTRAL_7B.n_params() / shape.n_params()) * (1536 / settings.data.max_length)
    return SEED_EXAMPLES_PER_S * scale


def measured_throughput(sweep: SweepRecord | None) -> float | None:
    """Mean examples per second of the sweep's completed GPU trials, or None."""
    if sweep is None:
        return None
    rates = []
    for t in sweep.trials:
        f = t.final
        if t.status == "completed" and f.get(DEVICE) == "cuda" and f.get(TRAIN_S):
            rates.append(float(f.get(EXAMPLES_SEEN, 0)) / float(f[TRAIN_S]))
    return sum(rates) / len(rates) if rates else None


def cost_line(plan: SweepPlan, measured: float | None = None) -> str:
    """One line: predicted GPU-hours and cost of the sweep, and where the throughput comes from."""
    spec = plan.spec
    rate, source = spec.resources.examples_per_gpu_second, "resources.examples_per_gpu_second"
    if rate is None and measured:
        rate, source = measured, "measured in earlier trials of this sweep"
    seconds = 0.0
    for trial in plan.trials:
        n = examples_per_trial(spec, trial.settings)
        r = rate or default_throughput(spec, trial.settings)
        if n is None or r is None:
            return ("Predicted GPU-hours: unknown (set training.max_steps or data.max_rows, and "
                    "resources.examples_per_gpu_second for a model sweeper does not know)")  # fmt: skip
        seconds += n / r
    if rate is None:
        source = f"scaled from the seed's ~{SEED_EXAMPLES_PER_S:g} example/s for Mistral-7B at max_length 1536"
    hours = seconds / 3600
    usd = hours * spec.resources.gpu_hour_usd
    shown = f"{hours:.3g}" if hours >= 0.01 else "< 0.01"
    return (f"Predicted GPU-hours: {shown} for {len(plan.trials)} trial(s), ${usd:,.2f} at "
            f"${spec.resources.gpu_hour_usd:g}/GPU-hour (throughput {source})")  # fmt: skip


def infeasible_rows(planned: Iterable[TrialPlan], budget: float) -> list[InfeasibleRow]:
    return [{"params": p.params, "reason": "preflight", "predicted_gb": p.predicted_gb, "gpu_memory_gb": budget}
            for p in planned if p.over]  # fmt: skip


def oom_rows(sweep: SweepRecord) -> list[InfeasibleRow]:
    """Trials that ran out of memory at every per-device batch they tried."""
    rows = []
    for t in sweep.trials:
        if t.status == "oom":
            tried = [a.get("per_device_train_batch_size") for a in t.attempts]
            rows.append({"params": t.params, "reason": "oom", "trial_id": t.trial_id, "batches_tried": tried})
    return rows


# Swept parameters that do not change a trial's memory: a config that ran out of memory at every batch rules
# out the same config at any value of these (every other parameter is compared as is).
MEMORY_NEUTRAL = frozenset({
    "learning_rate", "beta", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
    "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "seed", "num_train_epochs",
    "max_steps", "label_smoothing", "loss_type", "rpo_alpha",
})  # fmt: skip


def ruled_out_by(params: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The out-of-memory row (oom_rows, infeasible.json) that rules ``params`` out, or None.

    A row rules out the same memory-relevant parameters at a per-device batch at least the smallest one that
    ran out of memory (1 after ``oom: retry_halved``: then every batch)."""

    def memory_keys(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k not in MEMORY_NEUTRAL and k != "per_device_train_batch_size"}

    for row in rows:
        if row.get("reason") != "oom" or memory_keys(row.get("params") or {}) != memory_keys(params):
            continue
        tried = [b for b in row.get("batches_tried") or [] if isinstance(b, int)]
        batch = params.get("per_device_train_batch_size")
        if not tried or not isinstance(batch, int) or batch >= min(tried):
            return row
    return None


def infeasible_reason(plan: SweepPlan, params: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """Why a proposed config must not run (the bayes searcher redraws it), or None when it may.

    It ran out of memory at every batch before (``rows``: infeasible.json and this sweep's OOM trials), or, with
    ``preflight: skip``, it is predicted above the GPU's memory.
    """
    row = ruled_out_by(params, rows)
    if row is not None:
        return f"ran out of memory at every batch before ({row.get('trial_id') or 'an earlier launch'})"
    resources = plan.spec.resources
    trial = plan.trial(params)
    if resources.preflight == "skip" and trial.over:
        return (f"predicted {trial.predicted_gb:.1f} GB > resources.gpu_memory_gb "
                f"{resources.gpu_memory_gb:g} (preflight: skip)")  # fmt: skip
    return None


def oom_row(trial: TrialPlan, trial_id: str, oom: str) -> InfeasibleRow:
    """The infeasible row of a trial that ran out of memory at every batch it tried: every batch down to 1 after
    ``oom: retry_halved``, else its own."""
    smallest = 1 if oom == "retry_halved" else trial.settings.training.per_device_train_batch_size
    return {"params": trial.params, "reason": "oom", "trial_id": trial_id, "batches_tried": [smallest]}


def read_infeasible(sweep_dir: Path) -> list[dict[str, Any]]:
    return read_json(sweep_dir / INFEASIBLE_FILE) or []


def record_infeasible(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Add rows to trials/<name>/infeasible.json (params seen before are kept once)."""
    known = read_infeasible(sweep_dir)
    seen = {json.dumps(r.get("params"), sort_keys=True) for r in known}
    new = [r for r in rows if json.dumps(r.get("params"), sort_keys=True) not in seen]
    if new:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_json(sweep_dir / INFEASIBLE_FILE, known + new)


def calibrate_from(spec: Spec, sweep: SweepRecord | None) -> tuple[float, int]:
    """The activation coefficient refit from a sweep's measured GPU peaks, and how many trials it used."""
    pairs = []
    for t in sweep.trials if sweep is not None else []:
        measured = estimate.measured_peak_gb(t.final)
        settings = recorded_settings(spec, t)
        batch = t.final.get(PER_DEVICE_TRAIN_BATCH_SIZE)
        if isinstance(batch, int):  # the attempt that ran through (after OOM retries)
            settings = settings.with_training(
                settings.training.model_copy(update={"per_device_train_batch_size": batch})
            )
        setup = estimate.setup_from_settings(settings)
        if measured is not None and setup is not None:
            pairs.append((setup, measured[0]))
    return estimate.calibrate(pairs), len(pairs)
