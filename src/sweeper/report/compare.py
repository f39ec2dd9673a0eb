"""Sweeps side by side (4-bit vs 8-bit, base vs instruct): reports/compare-<names>.md.

``render_compare(sweeps)`` is pure, like the report; sweeps are named by their folder (trials/<folder>),
which stays unique when an earlier sweep of the same spec name was set aside. Light module: imports
neither torch nor ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.errors import TrialsError
from sweeper.records.files import write_text_atomic
from sweeper.records.store import SweepRecord, best_trial
from sweeper.report.markdown import fmt, memory_cell, status_counts, usd
from sweeper.report.summary import compute, metric_of, runner_up, trial_row
from sweeper.report.tables import table

# Spec keys that differ between any two sweeps by construction, not by design.
IGNORED_KEYS = ("name", "output.")


def compare_name(sweeps: Sequence[SweepRecord]) -> str:
    return "compare-" + "-".join(s.path.name for s in sweeps)


def render_compare(sweeps: Sequence[SweepRecord]) -> str:
    names = [s.path.name for s in sweeps]
    lines = [f"# Sweep comparison: {' vs '.join(names)}", ""]
    metrics = {metric_of(s) for s in sweeps}
    if len(metrics) > 1:
        lines += ["⚠ The sweeps optimise different metrics: " + ", ".join(f"`{m}` ({g})" for m, g in sorted(metrics))
                  + "; each column's best trial is by its own metric.", ""]  # fmt: skip
    columns = [_overview(s) for s in sweeps]
    lines += table(["", *names], [[name, *[col[i] for col in columns]] for i, name in enumerate(OVERVIEW_ROWS)])
    diffs = spec_differences(sweeps)
    lines += ["", "## What differs in the specs", ""]
    if diffs:
        lines += table(["spec key", *names], [[f"`{k}`", *[spec_value(v) for v in vals]] for k, vals in diffs])
    else:
        lines.append("Nothing: the specs are the same apart from their names.")
    lines += ["", "## Same configuration, each sweep", "", *_by_config(sweeps)]
    return "\n".join(lines) + "\n"


def write_compare(sweeps: Sequence[SweepRecord], reports_dir: Path) -> Path:
    if len(sweeps) < 2:
        raise TrialsError(f"compare needs at least 2 sweep folders, got {len(sweeps)}: "
                          "pass e.g. trials/smoke trials/smoke-8bit")  # fmt: skip
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / f"{compare_name(sweeps)}.md"
    write_text_atomic(out, render_compare(sweeps))
    return out


def _overview(sweep: SweepRecord) -> list[str]:
    """One sweep's column of the overview, in the order of OVERVIEW_ROWS."""
    metric, goal = metric_of(sweep)
    spec = sweep.meta.get("spec") or {}
    model = spec.get("model") or {}
    best = best_trial(sweep, metric, goal)
    row = trial_row(sweep, best) if best is not None else None
    second = runner_up(sweep, best, metric, goal) if best is not None else None
    value = best.value(metric) if best is not None else None
    second_value = second.value(metric) if second is not None else None
    c = compute(sweep)
    rows = [trial_row(sweep, t) for t in sweep.trials]
    largest = max(rows, key=_peak_mb, default=None)
    return [
        f"`{model.get('name_or_path', '?')}`",
        str(model.get("quantization", "?")),
        str((sweep.meta.get("host") or {}).get("hardware", "?")),
        status_counts(sweep),
        f"`{metric}` ({goal})",
        f"`{best.trial_id}`" if best is not None else "no winner",
        ", ".join(f"{k}={fmt(v)}" for k, v in best.params.items()) if best is not None else "-",
        fmt(value),
        fmt(abs(value - second_value)) if value is not None and second_value is not None else "-",
        fmt(row["rewards/accuracies"]) if row else "-",
        fmt(row["loss"]) if row else "-",
        memory_cell(row) if row else "-",
        memory_cell(largest) if largest is not None else "-",
        f"{fmt(c.spent_h)} {c.unit}-h" + (f" ({usd(c.usd(c.spent_h))})" if c.usd_per_hour is not None else ""),
        f"{fmt(c.saved_h)} {c.unit}-h over {c.n_pruned} pruned" if c.n_pruned else "none pruned",
        f"{fmt(sweep.meta.get('wall_s'))} s",
        f"`{sweep.meta.get('spec_hash', '?')}`",
    ]


OVERVIEW_ROWS = ("model", "quantization", "hardware", "trials", "metric", "best trial", "best config",
                 "best value", "margin over runner-up", "best: accuracies", "best: loss", "best: peak memory",
                 "largest peak memory", "compute spent", "saved by pruning", "sweep wall time",
                 "spec sha256")  # fmt: skip


def spec_differences(sweeps: Sequence[SweepRecord]) -> list[tuple[str, list[Any]]]:
    flat = [_flatten(s.meta.get("spec") or {}) for s in sweeps]
    keys = sorted(set().union(*flat))
    out = []
    for key in keys:
        if key in IGNORED_KEYS or key.startswith(IGNORED_KEYS[1:]):
            continue
        values = [f.get(key) for f in flat]
        if any(v != values[0] for v in values[1:]):
            out.append((key, values))
    return out


def spec_value(value: Any) -> str:
    """A spec value as the YAML reads: lists as their items, booleans as true/false, unset as '-'."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ", ".join(spec_value(v) for v in value) or "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {spec_value(v)}" for k, v in value.items()) or "(none)"
    return fmt(value)


def _by_config(sweeps: Sequence[SweepRecord]) -> list[str]:
    """Final metric of each swept configuration in each sweep (blank where a sweep did not run it)."""
    metric = metric_of(sweeps[0])[0]
    configs: dict[str, dict[str, str]] = {}
    for s in sweeps:
        for t in s.trials:
            key = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(t.params.items())) or "(no swept parameters)"
            value = fmt(t.value(metric))
            configs.setdefault(key, {})[s.path.name] = value if t.status == "completed" else f"{value} ({t.status})"
    rows = [[key, *[cells.get(s.path.name, "") for s in sweeps]] for key, cells in sorted(configs.items())]
    head = ["configuration", *[s.path.name for s in sweeps]]
    return [f"Final `{metric}` per configuration:", "", *table(head, rows)]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _peak_mb(row: dict[str, Any]) -> float:
    return float(row["cuda_max_reserved_mb"] or row["peak_rss_mb"] or 0.0)
