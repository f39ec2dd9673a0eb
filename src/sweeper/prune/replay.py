"""Replay recorded curves through a pruner, offline and deterministically: pick a pruner without a GPU.

A simulated scheduler starts trials in a given order, ``concurrency`` at a time, all at the same speed
(time is measured in examples seen), and feeds each logged value to a PruningGate exactly as the live
Ray scheduler does. It reports which trials are stopped and when, compute spent over the full grid,
whether the full-grid winner survives, and the regret when it does not.

Light module: no torch, no ray.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.config.spec import Spec
from sweeper.errors import TrialsError
from sweeper.plan.budget import Budget, common_grid
from sweeper.plan.compile import sweep_budget
from sweeper.plan.pruning import from_wandb
from sweeper.prune import guard
from sweeper.prune.gate import PruningGate, build_pruner
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


@dataclass
class Outcome:
    pruned: dict[str, int] = field(default_factory=dict)  # trial id -> examples seen when stopped
    spent: int = 0
    full: int = 0
    winner: str | None = None
    winner_kept: bool = True
    regret: float = 0.0

    @property
    def ratio(self) -> float:
        return self.spent / self.full if self.full else 1.0


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


@dataclass(frozen=True)
class Replay:
    """One way to replay curves: the pruner (Optuna arguments, direction, budget, smoothing) and the concurrency."""

    config: dict[str, Any]
    direction: str
    budget: Budget
    concurrency: int = 1
    smoothing: float = 0.0


def simulate(curves: list[Curve], replay: Replay, order: list[int] | None = None, gate: Any = None) -> Outcome:
    """Run the curves through a fresh in-memory study; decisions depend only on the inputs.

    ``gate`` replaces the PruningGate with any object of the same interface (add, report, prune,
    complete): the benchmark passes Ray's ASHA that way.
    """
    concurrency, direction = replay.concurrency, replay.direction
    if gate is None:
        gate = PruningGate(build_pruner(replay.config, replay.budget), direction, replay.budget.grid,
                           smoothing=replay.smoothing)  # fmt: skip
    queue = [curves[i] for i in (order if order is not None else range(len(curves)))]
    running: list[tuple[int, int, Curve]] = []  # (start time, next point index, curve)
    clock, outcome = 0, Outcome(full=sum(c.total for c in curves))
    while queue or running:
        while queue and len(running) < concurrency:
            curve = queue.pop(0)
            gate.add(curve.trial_id)
            running.append((clock, 0, curve))
        # the next event: the running trial whose next logged point comes first
        i = min(range(len(running)), key=lambda k: running[k][0] + running[k][2].points[running[k][1]][0])
        start, index, curve = running[i]
        step, value = curve.points[index]
        clock = start + step
        last = index + 1 == len(curve.points)
        if gate.report(curve.trial_id, step, value) and not (last and curve.final is not None):
            gate.prune(curve.trial_id)
            outcome.pruned[curve.trial_id] = step
            outcome.spent += step
            running.pop(i)
        elif last:
            gate.complete(curve.trial_id, curve.final if curve.final is not None else value)
            outcome.spent += curve.total
            clock = start + curve.total
            running.pop(i)
        else:
            running[i] = (start, index + 1, curve)
    _score(outcome, curves, direction)
    return outcome


def _score(outcome: Outcome, curves: list[Curve], direction: str) -> None:
    finals = {c.trial_id: c.final for c in curves if c.final is not None}
    if not finals:
        return
    pick = max if direction == "maximize" else min
    outcome.winner = pick(finals, key=lambda k: finals[k])
    outcome.winner_kept = outcome.winner not in outcome.pruned
    kept = [v for k, v in finals.items() if k not in outcome.pruned]
    spread = max(finals.values()) - min(finals.values())
    if kept and spread > 0:
        outcome.regret = abs(finals[outcome.winner] - pick(kept)) / spread
    elif not kept:
        outcome.regret = 1.0


def over_orders(curves: list[Curve], replay: Replay, n_orders: int, seed: int = 0,
                run: Any = None) -> dict[str, float]:  # fmt: skip
    """Means over random trial arrival orders: compute ratio, winner kept, regret. ``run(order)`` replaces the
    plain ``simulate`` (another scheduler behind the gate interface)."""
    rng = random.Random(seed)
    outcomes = []
    for _ in range(n_orders):
        order = list(range(len(curves)))
        rng.shuffle(order)
        outcomes.append(run(order) if run is not None else simulate(curves, replay, order))
    return {
        "compute": statistics.mean(o.ratio for o in outcomes),
        "winner_kept": statistics.mean(1.0 if o.winner_kept else 0.0 for o in outcomes),
        "regret": statistics.mean(o.regret for o in outcomes),
    }


def sweep_config(spec: Spec, meta: dict[str, Any]) -> tuple[dict[str, Any], Budget, float]:
    """The pruner config, budget and smoothing a recorded sweep ran with (median if it had none)."""
    data = meta.get("data", {})
    budget = sweep_budget(spec, int(data.get("n_train", 0)), float(data.get("tokens_per_example", 1.0)))
    et = spec.early_terminate
    if et is None:
        return {"type": "optuna", "pruner": "median"}, budget, 0.0
    config = from_wandb(et.arguments, budget) if et.type == "hyperband" else et.arguments
    return config, budget, et.smoothing


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


@dataclass(frozen=True)
class ReplayOptions:
    """``python -m sweeper replay``: what to replay (a sweep folder or log_history files) and how."""

    paths: list[Path]
    pruner: str | None = None  # None: the pruner the sweep ran with (median for log_history files)
    overrides: dict[str, Any] = field(default_factory=dict)  # pruner arguments given as --set key=value
    metric: str | None = None
    goal: str | None = None
    concurrency: int = 1
    n_orders: int = 0  # random arrival orders to average over, besides the recorded order
    seed: int = 0
    smoothing: float | None = None  # None: the sweep's own
    examples_per_step: int = 1  # log_history files count optimizer steps: examples per step


def replay_text(options: ReplayOptions, gate_factory: Any = None) -> str:
    """The replay's report. ``gate_factory(budget, direction)`` replaces sweeper's gate by another scheduler with
    the same interface (``replay --pruner asha``: Ray Tune's ASHA, from sweeper.tune.asha)."""
    paths, metric = options.paths, options.metric
    _check_options(options)
    curves, recorded, metric, spec_goal, notes = load_curves(paths, metric, options.examples_per_step)
    direction, note = _direction(options, metric, spec_goal if recorded is not None else None)
    if not curves:
        raise TrialsError(f"{paths[0]}: no completed or pruned trial logged '{metric}': nothing to replay")
    if recorded is not None:
        config, budget, recorded_smoothing = sweep_config(*recorded)
    else:
        config, budget, recorded_smoothing = {"type": "optuna", "pruner": "median"}, budget_of(curves), 0.0
    if gate_factory is not None:
        config = {"type": "optuna", "pruner": "nop"}  # the factory's scheduler decides; the study only records
        named = "Ray Tune ASHA (grace 10%, reduction 3)"
    else:
        if options.pruner is not None:
            warmup = config.get("warmup_fraction", 0.1)
            config = {"type": "optuna", "pruner": options.pruner, "warmup_fraction": warmup}
        config = {**config, **options.overrides}
        _check(config)
        pruner = config.get("pruner", "median")
        named = f"{'sweeper' if pruner == 'peer' else 'Optuna'} {pruner} ({_args_text(config)})"
    smooth = recorded_smoothing if options.smoothing is None else options.smoothing
    concurrency, n_orders = options.concurrency, options.n_orders
    replay = Replay(config, direction, budget, concurrency, smooth)

    def run(order: list[int] | None = None) -> Outcome:
        return simulate(curves, replay, order, gate=gate_factory(budget, direction) if gate_factory else None)

    outcome = run()
    lines = [
        f"Replaying {len(curves)} trial(s) from {', '.join(map(str, paths))} on {metric} ({direction}) with "
        f"{named}, grid {budget.grid} examples, concurrency {concurrency}",
        *([note] if note else []),
        *notes,
        "  in recorded order:",
    ]
    for c in curves:
        fate = f"pruned at {outcome.pruned[c.trial_id]} examples" if c.trial_id in outcome.pruned \
            else f"runs to the end ({c.total} examples)"  # fmt: skip
        lines.append(f"    {c.trial_id} {c.label}: {fate}; guard {c.guard or '-'}")
    lines.append(f"  compute {outcome.spent} of {outcome.full} examples = {outcome.ratio:.2f} of the full grid; "
                 f"full-grid winner {outcome.winner} {'kept' if outcome.winner_kept else 'PRUNED'}; "
                 f"regret {outcome.regret:.3f}")  # fmt: skip
    if n_orders > 0:
        means = over_orders(curves, replay, n_orders, options.seed, run)
        lines.append(f"  over {n_orders} random orders: compute {means['compute']:.2f}, winner kept "
                     f"{means['winner_kept']:.2f}, regret {means['regret']:.3f}")  # fmt: skip
    return "\n".join(lines)


def _check_options(options: ReplayOptions) -> None:
    from sweeper.errors import SpecError

    if options.concurrency < 1:
        raise SpecError(f"replay: --concurrency must be at least 1 (trials running at once), got {options.concurrency}")
    if options.n_orders < 0:
        raise SpecError(f"replay: --orders must be 0 or more, got {options.n_orders}")
    if options.smoothing is not None and not 0 <= options.smoothing < 1:
        raise SpecError(f"replay: --smoothing is an EMA weight in [0, 1), got {options.smoothing}")
    if options.examples_per_step < 1:
        raise SpecError(f"replay: --examples-per-step must be at least 1, got {options.examples_per_step}")


def _direction(options: ReplayOptions, metric: str, sweep_goal: str | None) -> tuple[str, str | None]:
    """--goal, else the sweep's own goal for its own metric, else inferred from the metric's name (with a note)."""
    from sweeper.config.metricnames import infer_goal
    from sweeper.errors import SpecError

    if options.goal is not None:
        return options.goal, None
    if options.metric is None:  # the sweep's own metric, or rewards/margins for log_history files
        return sweep_goal or "maximize", None
    inferred = infer_goal(metric)
    if inferred is None:
        raise SpecError(f"replay: cannot tell whether to maximize or minimize '{metric}' from its name: pass --goal")
    return inferred, f"  goal {inferred} inferred from the metric's name '{metric}' (pass --goal to insist)"


def _check(config: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from sweeper.config.spec import EarlyTerminate
    from sweeper.errors import SpecError

    try:
        EarlyTerminate.model_validate(config)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        detail = str(err["msg"]).removeprefix("Value error, ")
        raise SpecError(f"replay: {where + ': ' if where else ''}{detail}") from None


def _args_text(config: dict[str, Any]) -> str:
    skip = {"type", "pruner", "step_unit", "guard", "smoothing"}
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if k not in skip) or "defaults"
