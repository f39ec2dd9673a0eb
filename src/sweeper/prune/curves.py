"""Recorded curves for the replay: the trials of a sweep folder, or TRL/transformers ``log_history`` files.

Light module: no torch, no ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.config.spec import Spec
from sweeper.errors import TrialsError
from sweeper.plan.budget import Budget, common_grid
from sweeper.prune import guard
from sweeper.records.metrics import EXAMPLES_SEEN, TOKENS_SEEN
from sweeper.records.store import SweepRecord


@dataclass(frozen=True)
class Curve:
    trial_id: str
    points: tuple[tuple[int, float], ...]  # (examples seen, value), increasing
    total: int  # the trial's planned length, in examples (>= its last point)
    final: float | None  # value at the end of a trial that ran through; None for a truncated curve
    label: str = ""
    guard: str = ""  # the margin-hacking guard's verdict on the whole recorded curve ("ok" / "flagged: ...")


def curves_from_sweep(sweep: SweepRecord, metric: str, step_key: str = EXAMPLES_SEEN) -> list[Curve]:
    curves = []
    for t in sweep.trials:
        if t.status not in ("completed", "pruned"):
            continue
        points = tuple((int(r[step_key]), float(r[metric])) for r in t.curve
                       if isinstance(r.get(metric), int | float) and r.get(step_key) is not None)  # fmt: skip
        if not points:
            continue
        total = int(t.pruned["planned_examples"]) if t.pruned else points[-1][0]
        final = t.value(metric) if t.status == "completed" else None
        label = " ".join(f"{k}={v}" for k, v in t.params.items())
        beta = t.params.get("beta") or (sweep.meta.get("spec", {}).get("training") or {}).get("beta")
        curves.append(Curve(t.trial_id, points, max(total, points[-1][0]), final, label,
                            guard.verdict(list(t.curve), beta)))  # fmt: skip
    return curves


def curves_from_log_history(path: Path, metric: str, examples_per_step: int = 1) -> Curve:
    """A TRL/transformers ``log_history`` (trainer_state.json, or {"log_history": [...]}) as one curve.

    The x axis is ``step`` x examples_per_step; rows without a numeric step fall back to ``epoch`` (in
    thousandths), else to row order, and the curve's label says which (``Curve.label``).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrialsError(f"{path}: not a readable log_history JSON file ({type(exc).__name__}: {exc})") from None
    rows = data.get("log_history", []) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise TrialsError(f"{path}: 'log_history' is not a list of logged rows")
    rows = [r for r in rows if isinstance(r, dict)]
    logged = [r for r in rows if _number(r.get(metric))]
    if not logged:
        has = sorted({k for r in rows for k, v in r.items() if _number(v) and k not in ("step", "epoch")})
        hint = f"; it logs {', '.join(has[:8])}{' ...' if len(has) > 8 else ''}" if has else ""
        raise TrialsError(f"{path}: no '{metric}' values in its log_history{hint}: pick one with --metric")
    if all(_number(r.get("step")) for r in logged):
        xs, note = [float(r["step"]) * examples_per_step for r in logged], ""
    elif all(_number(r.get("epoch")) for r in logged):
        xs, note = [float(r["epoch"]) * 1000 for r in logged], "x = epoch/1000 (no step in its rows)"
    else:
        xs, note = [float(i + 1) * examples_per_step for i in range(len(logged))], "x = row order (no step or epoch)"
    points: list[tuple[int, float]] = []
    for x, r in zip(xs, logged, strict=True):
        if points and int(x) <= points[-1][0]:
            continue  # repeated or decreasing x (a restarted run): keep the first value there
        points.append((int(x), float(r[metric])))
    return Curve(path.stem, tuple(points), points[-1][0], points[-1][1], note, guard.verdict(rows))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN is not a value


def log_history_files(folder: Path) -> list[Path]:
    """The JSON files of a folder of log_history files (an ``index.json`` of sources is skipped)."""
    return sorted(p for p in folder.glob("*.json") if p.name != "index.json")


def budget_of(curves: list[Curve]) -> Budget:
    """A budget read off the curves themselves (for log_history files)."""
    intervals = [c.points[0][0] if len(c.points) == 1 else c.points[1][0] - c.points[0][0] for c in curves]
    totals = [c.total for c in curves]
    return Budget(grid=common_grid(intervals), min_total=min(totals), max_total=max(totals))


def load_curves(paths: list[Path], metric: str | None,
                examples_per_step: int) -> tuple[list[Curve], Any, str, str, list[str]]:  # fmt: skip
    """Curves from one sweep folder, or from log_history files (one trial each; a folder of them too), and notes
    on the files left out."""
    from sweeper.records.store import SWEEP_FILE, load_sweep

    if len(paths) == 1 and paths[0].is_dir() and (paths[0] / SWEEP_FILE).is_file():
        sweep = load_sweep(paths[0])
        spec = Spec.model_validate(sweep.meta["spec"])
        metric = metric or spec.metric.name
        step_key = TOKENS_SEEN if spec.early_terminate and spec.early_terminate.step_unit == "tokens" \
            else EXAMPLES_SEEN  # fmt: skip
        return curves_from_sweep(sweep, metric, step_key), (spec, sweep.meta), metric, spec.metric.goal, []
    metric = metric or "rewards/margins"
    files = [f for p in paths for f in (log_history_files(p) if p.is_dir() else [p])]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise TrialsError(f"{missing[0]}: no such file or sweep folder; pass trials/<name> or log_history JSON files")
    if not files:
        raise TrialsError(f"{paths[0]}: holds no log_history JSON files (and no sweep.json)")
    curves, skipped = [], []
    for f in files:
        try:
            curves.append(curves_from_log_history(f, metric, examples_per_step))
        except TrialsError as exc:
            if len(files) == 1:
                raise
            skipped.append(str(exc))
    if not curves:
        raise TrialsError(f"{paths[0]}: none of its {len(files)} files logs '{metric}': pick one with --metric")
    return curves, None, metric, "maximize", [f"  left out: {why}" for why in skipped]
