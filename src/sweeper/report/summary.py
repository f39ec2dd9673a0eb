"""Per-trial and per-sweep figures derived from the records: the report, the dashboard and trials.csv share them.

Everything here is a pure function of a SweepRecord (no clock, no file reads), except ``export_tables``,
which writes trials/<name>/trials.csv and trials.parquet. pandas is imported inside the functions that
build frames. Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.records.files import write_atomic
from sweeper.records.metrics import (
    CUDA_MAX_ALLOCATED_MB,
    CUDA_MAX_RESERVED_MB,
    ELAPSED_S,
    EXAMPLES_SEEN,
    GUARD,
    NVML_PEAK_USED_MB,
    PEAK_RSS_MB,
    PREDICTED_PEAK_GB,
    STEP,
)
from sweeper.records.store import SweepRecord, TrialRecord, best_trial
from sweeper.report.evalstats import heldout_columns

if TYPE_CHECKING:
    import pandas as pd

MARGINS = "rewards/margins"
# TRL's metrics shown for every trial (final value), in this order.
TRL_METRICS = ("rewards/margins", "rewards/accuracies", "loss", "logps/chosen", "logps/rejected")
# Metrics whose best value over the curve is shown too (the spec's metric is added in front).
BEST_OF = (MARGINS,)
# TRL's held-out versions (with eval_steps set), shown where any trial logged them
EVAL_METRICS = ("eval_rewards/margins", "eval_rewards/accuracies", "eval_loss")
DEFAULT_GPU_HOUR_USD = 2.0
# Fewer optimizer steps than this and the verdict says the ranking is of early training only.
MIN_STEPS = 50
TABLES = ("trials.csv", "trials.parquet")


@dataclass(frozen=True)
class Accounting:
    """How trial time turns into compute: GPU-hours when trials hold GPUs, else CPU-hours."""

    unit: str  # "GPU" or "CPU"
    per_trial: float  # GPUs (or CPUs) held by one trial
    usd_per_hour: float | None  # GPU-hour rate; None for CPU-hours

    def hours(self, seconds: float | None) -> float | None:
        return None if seconds is None else seconds / 3600 * self.per_trial

    def usd(self, seconds: float | None) -> float | None:
        hours = self.hours(seconds)
        return None if hours is None or self.usd_per_hour is None else hours * self.usd_per_hour


def metric_of(sweep: SweepRecord) -> tuple[str, str]:
    metric = sweep.meta.get("metric") or {}
    return str(metric.get("name", MARGINS)), str(metric.get("goal", "maximize"))


def accounting(sweep: SweepRecord) -> Accounting:
    resources = (sweep.meta.get("spec") or {}).get("resources") or {}
    gpus = ((sweep.meta.get("host") or {}).get("ray") or {}).get("gpus_per_trial")
    if gpus is None:
        gpus = resources.get("gpus_per_trial") or 0
    if gpus:
        rate = resources.get("gpu_hour_usd")
        return Accounting("GPU", float(gpus), float(DEFAULT_GPU_HOUR_USD if rate is None else rate))
    return Accounting("CPU", float(resources.get("cpus_per_trial") or 1), None)


def best_value(t: TrialRecord, metric: str, goal: str) -> float | None:
    values = [float(r[metric]) for r in [*t.curve, t.final] if isinstance(r.get(metric), int | float)]
    if not values:
        return None
    return max(values) if goal == "maximize" else min(values)


def guard_of(t: TrialRecord) -> str | None:
    """The margin-hacking guard's verdict ("ok", "flagged: ..."), where the pruning work recorded one."""
    guard = getattr(t, "guard", None)
    if isinstance(guard, str) and guard:
        return guard
    for row in reversed([*t.curve, t.final]):
        if isinstance(row.get(GUARD), str):
            return str(row[GUARD])
    return None


def batch_of(t: TrialRecord) -> tuple[int | None, int | None]:
    """(per-device batch, accumulation) the trial last ran with: after OOM retries, its last attempt's."""
    if t.attempts:
        last = t.attempts[-1]
        if last.get("per_device_train_batch_size") is not None:
            return int(last["per_device_train_batch_size"]), _int(last.get("gradient_accumulation_steps"))
    return _int(t.training("per_device_train_batch_size")), _int(t.training("gradient_accumulation_steps"))


def learning_rate_of(t: TrialRecord) -> float | None:
    return _num(t.training("learning_rate"))


def final_metrics(sweep: SweepRecord) -> list[str]:
    """The metrics whose final values the report and trials.csv show: the sweep's, TRL's, and TRL's eval_ ones
    where the trials evaluated during training."""
    metric, _ = metric_of(sweep)
    logged = {k for t in sweep.trials for row in [*t.curve, t.final] for k in row}
    return list(dict.fromkeys([metric, *TRL_METRICS, *(m for m in EVAL_METRICS if m in logged)]))


def trial_row(sweep: SweepRecord, t: TrialRecord, acct: Accounting | None = None,
              finals: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """One trial as a flat dict of raw values (None where unknown): a row of trials.csv."""
    acct = acct or accounting(sweep)
    metric, goal = metric_of(sweep)
    batch, accumulation = batch_of(t)
    elapsed = t.value(ELAPSED_S)
    row: dict[str, Any] = {"trial_id": t.trial_id}
    row.update({name: t.params.get(name) for name in sweep.meta.get("swept", [])})
    row.update({
        "per_device_batch": batch,
        "accumulation": accumulation,
        "effective_batch": batch * accumulation if batch and accumulation else None,
        "status": t.status,
        "attempts": max(len(t.attempts), 1),
        "stopped_step": _stop(t, "step", STEP),
        "stopped_examples": _stop(t, "examples_seen", EXAMPLES_SEEN),
        "stop_reason": _reason(t),
    })  # fmt: skip
    for name in finals if finals is not None else final_metrics(sweep):
        row[name] = t.value(name)
    for name in dict.fromkeys([metric, *BEST_OF]):
        row[f"best {name}"] = best_value(t, name, goal if name == metric else "maximize")
    row.update({
        "guard": guard_of(t),
        "steps": _int(t.value(STEP)),
        "examples_seen": _int(t.value(EXAMPLES_SEEN)),
        "wall_s": elapsed,
        f"{acct.unit.lower()}_hours": acct.hours(elapsed),
        "cost_usd": acct.usd(elapsed),
        "peak_rss_mb": t.value(PEAK_RSS_MB),
        "cuda_max_allocated_mb": t.value(CUDA_MAX_ALLOCATED_MB),
        "cuda_max_reserved_mb": t.value(CUDA_MAX_RESERVED_MB),
        "nvml_peak_used_mb": t.value(NVML_PEAK_USED_MB),
        "predicted_peak_gb": t.value(PREDICTED_PEAK_GB),
        "saved_s": _num((t.pruned or {}).get("saved_s")),
        "saved_examples": _int((t.pruned or {}).get("saved_examples")),
    })  # fmt: skip
    row.update(heldout_columns(t.evaluation))  # held-out evaluation (sweeper.run.evalrun), None where not evaluated
    return row


def trial_rows(sweep: SweepRecord) -> list[dict[str, Any]]:
    acct, finals = accounting(sweep), final_metrics(sweep)
    return [trial_row(sweep, t, acct, finals) for t in sweep.trials]


def trials_frame(sweep: SweepRecord) -> pd.DataFrame:
    """The sweep as a pandas DataFrame, one row per trial (the columns of trial_row)."""
    import pandas as pd

    return pd.DataFrame(trial_rows(sweep))


def export_tables(sweep: SweepRecord) -> list[Path]:
    """Write trials/<name>/trials.csv and trials.parquet (the DataFrame of trials_frame)."""
    frame = trials_frame(sweep)
    csv, parquet = (sweep.path / name for name in TABLES)
    write_atomic(csv, lambda tmp: frame.to_csv(tmp, index=False))
    write_atomic(parquet, lambda tmp: frame.to_parquet(tmp, index=False))
    return [csv, parquet]


@dataclass(frozen=True)
class Compute:
    unit: str
    spent_h: float
    saved_h: float
    saved_examples: int
    n_pruned: int
    usd_per_hour: float | None
    # the work around the trials, on one trial's devices: shared reference precompute, held-out evaluation
    extra_h: dict[str, float] = field(default_factory=dict)

    @property
    def full_h(self) -> float:
        """What running every pruned trial to the end would have cost."""
        return self.spent_h + self.saved_h

    def usd(self, hours: float) -> float | None:
        return None if self.usd_per_hour is None else hours * self.usd_per_hour


def compute(sweep: SweepRecord) -> Compute:
    acct = accounting(sweep)
    spent = sum(t.value(ELAPSED_S) or 0.0 for t in sweep.trials)
    pruned = [t.pruned for t in sweep.trials if t.pruned]
    saved = sum(float(p.get("saved_s") or 0.0) for p in pruned)
    examples = sum(int(p.get("saved_examples") or 0) for p in pruned)
    phases = dict(sweep.meta.get("phases") or [])
    extra = {name: acct.hours(float(phases[name])) or 0.0 for name in ("shared references", "evaluation")
             if phases.get(name)}  # fmt: skip
    return Compute(acct.unit, acct.hours(spent) or 0.0, acct.hours(saved) or 0.0, examples, len(pruned),
                   acct.usd_per_hour, extra)  # fmt: skip


def runner_up(sweep: SweepRecord, best: TrialRecord, metric: str, goal: str) -> TrialRecord | None:
    rest = SweepRecord(path=sweep.path, meta=sweep.meta, trials=[t for t in sweep.trials if t is not best])
    return best_trial(rest, metric, goal)


# TRL's rewards are beta × (policy - reference) log-ratios: across trials of different beta they are not comparable.
BETA_SCALED = ("rewards/margins", "rewards/chosen", "rewards/rejected")


def beta_scaled(metric: str) -> bool:
    return metric.removeprefix("eval_") in BETA_SCALED


def best_per_beta(sweep: SweepRecord, metric: str, goal: str) -> tuple[TrialRecord, float] | None:
    """With beta swept and a beta-scaled metric: the completed trial best on metric ÷ beta, and that value.

    None when the metric does not scale with beta or fewer than two betas finished."""
    if not beta_scaled(metric):
        return None
    scored = [(v / float(t.params["beta"]), t) for t in sweep.trials
              if t.status == "completed" and float(t.params.get("beta") or 0) > 0
              and (v := t.value(metric)) is not None]  # fmt: skip
    if len({t.params["beta"] for _, t in scored}) < 2:
        return None
    pick = max if goal == "maximize" else min
    value, trial = pick(scored, key=lambda vt: vt[0])
    return trial, value


def _stop(t: TrialRecord, pruned_key: str, curve_key: str) -> int | None:
    if t.status == "completed":
        return None
    if t.pruned and t.pruned.get(pruned_key) is not None:
        return _int(t.pruned[pruned_key])
    return _int(t.value(curve_key))


def _reason(t: TrialRecord) -> str | None:
    if t.status == "pruned":
        return str((t.pruned or {}).get("reason") or "pruned")
    if t.status == "oom":
        return "out of memory"
    if t.status == "error":
        lines = [ln.strip() for ln in (t.error or "").splitlines() if ln.strip()]
        return lines[-1][:200] if lines else "unknown error"
    return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
