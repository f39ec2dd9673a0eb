"""Replay recorded curves through a pruner, offline and deterministically: pick a pruner without a GPU.

A simulated scheduler starts trials in a given order, ``concurrency`` at a time, all at the same speed
(time is measured in examples seen), and feeds each logged value to a PruningGate exactly as the live
Ray scheduler does (sweeper.prune.schedule); with ``on_prune: pause`` a trial below the bar is paused and the
PauseBook decides when it resumes. It reports which trials are stopped and when (paused and resumed), compute spent
over the full grid, whether the full-grid winner survives, and the regret when it does not.

Light module: no torch, no ray.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.config.spec import Spec
from sweeper.errors import TrialsError
from sweeper.plan.budget import Budget
from sweeper.plan.compile import sweep_budget
from sweeper.plan.pruning import from_wandb
from sweeper.prune import schedule
from sweeper.prune.curves import Curve, budget_of, curves_from_log_history, curves_from_sweep, load_curves
from sweeper.prune.gate import PruningGate, build_pruner, warmup_steps
from sweeper.prune.pause import PauseBook

__all__ = [
    "Curve",
    "Outcome",
    "Replay",
    "ReplayOptions",
    "budget_of",
    "curves_from_log_history",
    "curves_from_sweep",
    "load_curves",
    "over_orders",
    "replay_text",
    "simulate",
    "sweep_config",
]


@dataclass
class Outcome:
    pruned: dict[str, int] = field(default_factory=dict)  # trial id -> examples seen when stopped for good
    spent: int = 0  # examples trained, each once (a paused and resumed trial's too)
    full: int = 0
    winner: str | None = None
    winner_kept: bool = True
    regret: float = 0.0
    # on_prune: pause: what happened to each trial that was paused, in order (event, examples seen, why)
    events: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.spent / self.full if self.full else 1.0

    @property
    def pauses(self) -> int:
        return sum(kind == "paused" for e in self.events.values() for kind, _, _ in e)

    @property
    def resumes(self) -> int:
        return sum(kind == "resumed" for e in self.events.values() for kind, _, _ in e)

    def note(self, trial_id: str, kind: str, examples: int, why: str) -> None:
        self.events.setdefault(trial_id, []).append((kind, examples, why))


@dataclass(frozen=True)
class Replay:
    """One way to replay curves: the pruner (Optuna arguments, direction, budget, smoothing), the concurrency, and
    what a trial below the bar gets (``on_prune``, as in the spec: stop, or pause with sweeper.prune.pause)."""

    config: dict[str, Any]
    direction: str
    budget: Budget
    concurrency: int = 1
    smoothing: float = 0.0
    on_prune: str = "stop"


def simulate(curves: list[Curve], replay: Replay, order: list[int] | None = None, gate: Any = None) -> Outcome:
    """Run the curves through a fresh in-memory study (sweeper.prune.schedule); decisions depend only on the inputs.

    ``gate`` replaces the PruningGate with any object of the same interface (add, report, prune,
    complete): the benchmark passes Ray's ASHA that way. ``on_prune: pause`` needs sweeper's gate (the PauseBook
    asks it again about paused trials).
    """
    if gate is None:
        gate = PruningGate(build_pruner(replay.config, replay.budget), replay.direction, replay.budget.grid,
                           smoothing=replay.smoothing)  # fmt: skip
    book = None
    if replay.on_prune == "pause":
        if not hasattr(gate, "still_prunes"):
            raise TrialsError(f"on_prune: pause needs sweeper's pruning gate (an Optuna pruner or peer), not "
                              f"{type(gate).__name__}: replay it with on_prune: stop")  # fmt: skip
        book = PauseBook(maximize=replay.direction == "maximize")
        if replay.config.get("breadth_first"):
            book.rung = warmup_steps(replay.config, replay.budget)
    elif replay.on_prune != "stop":
        raise TrialsError(f"on_prune must be 'stop' or 'pause', but got {replay.on_prune!r}")
    queue = [curves[i] for i in (order if order is not None else range(len(curves)))]
    outcome = Outcome(full=sum(c.total for c in curves))
    schedule.run(queue, gate, outcome, replay.concurrency, book)
    _score(outcome, curves, replay.direction)
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
    """Means over random trial arrival orders: compute ratio, winner kept, regret, pauses and resumes per order.
    ``run(order)`` replaces the plain ``simulate`` (another scheduler behind the gate interface)."""
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
        "pauses": statistics.mean(o.pauses for o in outcomes),
        "resumes": statistics.mean(o.resumes for o in outcomes),
    }


def sweep_config(spec: Spec, meta: dict[str, Any]) -> tuple[dict[str, Any], Budget, float]:
    """The pruner config, budget and smoothing a recorded sweep ran with (median if it had none)."""
    data = meta.get("data", {})
    budget = sweep_budget(spec, int(data.get("n_train", 0)), float(data.get("tokens_per_example", 1.0)))
    et = spec.early_terminate
    if et is None:
        return default_rule(), budget, 0.0
    config = from_wandb(et.arguments, budget) if et.type == "hyperband" else et.arguments
    return config, budget, et.smoothing


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
    on_prune: str | None = None  # stop | pause; None: the sweep's own, else the spec's default


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
        config, budget, recorded_smoothing = default_rule(), budget_of(curves), 0.0
    if gate_factory is not None:
        config = {"type": "optuna", "pruner": "nop"}  # the factory's scheduler decides; the study only records
        named = "Ray Tune ASHA (grace 10%, reduction 3)"
    else:
        default = config == default_rule()
        if options.pruner is not None:
            warmup = 0.1 if default else config.get("warmup_fraction", 0.1)  # the spec's default warm-up
            config = {"type": "optuna", "pruner": options.pruner, "warmup_fraction": warmup}
        config = {**config, **options.overrides}
        pruner = config.get("pruner", "median")
        named = f"{'sweeper' if pruner == 'peer' else 'Optuna'} {pruner} ({_args_text(config)})"
        if default and options.pruner is None and not options.overrides:
            named = f"sweeper's default rule: {named}"
    smooth = recorded_smoothing if options.smoothing is None else options.smoothing
    concurrency, n_orders = options.concurrency, options.n_orders
    on_prune = _on_prune(options, config, gate_factory is not None)
    if on_prune == "stop" and config.get("breadth_first") and "breadth_first" not in options.overrides:
        config = {**config, "breadth_first": False}  # breadth first waits paused: not when trials stop
    if gate_factory is None:
        _check({**config, "on_prune": on_prune})
    replay = Replay(config, direction, budget, concurrency, smooth, on_prune)

    def run(order: list[int] | None = None) -> Outcome:
        return simulate(curves, replay, order, gate=gate_factory(budget, direction) if gate_factory else None)

    outcome = run()
    lines = [
        f"Replaying {len(curves)} trial(s) from {', '.join(map(str, paths))} on {metric} ({direction}) with "
        f"{named}, grid {budget.grid} examples, concurrency {concurrency}, on_prune {on_prune}",
        *([note] if note else []),
        *notes,
        "  in recorded order:",
    ]
    for c in curves:
        fate = f"pruned at {outcome.pruned[c.trial_id]} examples" if c.trial_id in outcome.pruned \
            else f"runs to the end ({c.total} examples)"  # fmt: skip
        lines.append(f"    {c.trial_id} {c.label}: {fate}; guard {c.guard or '-'}")
        lines += [f"      {kind} at {at} examples: {why}" for kind, at, why in outcome.events.get(c.trial_id, [])]
    paused = f"; {outcome.pauses} pause(s), {outcome.resumes} resume(s)" if on_prune == "pause" else ""
    lines.append(f"  compute {outcome.spent} of {outcome.full} examples = {outcome.ratio:.2f} of the full grid; "
                 f"full-grid winner {outcome.winner} {'kept' if outcome.winner_kept else 'PRUNED'}; "
                 f"regret {outcome.regret:.3f}{paused}")  # fmt: skip
    if n_orders > 0:
        means = over_orders(curves, replay, n_orders, options.seed, run)
        paused = f", pauses {means['pauses']:.1f}, resumes {means['resumes']:.1f} per order" if paused else ""
        lines.append(f"  over {n_orders} random orders: compute {means['compute']:.2f}, winner kept "
                     f"{means['winner_kept']:.2f}, regret {means['regret']:.3f}{paused}")  # fmt: skip
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


def _on_prune(options: ReplayOptions, config: dict[str, Any], other_scheduler: bool) -> str:
    """--on-prune, else the pruner config's own (the recorded sweep's, or sweeper's default rule), else stop; Ray's
    ASHA only stops."""
    from sweeper.errors import SpecError

    if options.on_prune is not None and options.on_prune not in ("stop", "pause"):
        raise SpecError(f"replay: --on-prune must be stop or pause, got {options.on_prune!r}")
    if other_scheduler:
        if options.on_prune == "pause":
            raise SpecError("replay: --on-prune pause asks sweeper's gate again about paused trials; --pruner asha "
                            "has no pause rule: pick a sweeper or Optuna pruner, or --on-prune stop")  # fmt: skip
        return "stop"
    if options.on_prune is not None:
        return options.on_prune
    return str(config.get("on_prune", "stop"))


def default_rule() -> dict[str, Any]:
    """sweeper's default rule (sweeper.config.pruners.DEFAULT_RULE) as a replay's pruner config."""
    from sweeper.config.pruners import with_default_rule

    return with_default_rule({"type": "optuna"})


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
    skip = {"type", "pruner", "step_unit", "guard", "smoothing", "on_prune"}
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if k not in skip) or "defaults"
