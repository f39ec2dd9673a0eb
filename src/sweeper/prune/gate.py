"""Pruning decisions: any Optuna pruner over a study, fed with reward-margin curves on a fair step axis.

``PruningGate.report(trial_id, examples_seen, value) -> prune?`` is plain Python (no Ray): the Ray
scheduler adapter in ``sweeper.tune.raytune`` calls it after every result, and ``sweeper.prune.replay`` calls it
offline on recorded curves.

Fair steps: trials with different per-device batch x accumulation cover different amounts of data per
optimizer step, and Optuna's percentile pruners only compare values reported at the *same* step. So the
gate reports to Optuna at fixed points of a common grid of examples seen (or tokens seen), each with the
trial's latest (optionally EMA-smoothed) value, and every trial lands on the same steps.

Light module: imports optuna, never torch or ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sweeper.config.pruners import PRUNER_ARGS
from sweeper.plan.budget import Budget
from sweeper.records.metrics import STALE


def resolve_args(config: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """Pruner arguments with sweeper's defaults: warm-up past the first (always zero) margins, auto resources."""
    name = config.get("pruner", "median")
    args = {k: v for k, v in config.items() if k in PRUNER_ARGS[name]}
    warmup = warmup_steps(config, budget)
    if name in ("median", "percentile", "threshold", "peer"):
        args.setdefault("n_warmup_steps", warmup)
        args.setdefault("interval_steps", 1)
    if name in ("median", "percentile"):
        args.setdefault("n_startup_trials", 1)
    if name in ("successive_halving", "hyperband"):
        if args.get("min_resource", "auto") == "auto":
            args["min_resource"] = max(warmup, budget.grid)
    if name == "hyperband" and args.get("max_resource", "auto") == "auto":
        args["max_resource"] = budget.max_total  # Optuna's "auto" needs a finished trial first
    if name == "successive_halving":
        args.setdefault("reduction_factor", 3)
    return args


def warmup_steps(config: dict[str, Any], budget: Budget) -> int:
    """Default warm-up: ``warmup_fraction`` (10%) of the shortest trial, and at least one grid point.

    A LoRA trial's first margins are exactly 0 (policy == reference): never judge on them.
    """
    fraction = float(config.get("warmup_fraction", 0.1))
    return max(budget.grid, int(math.ceil(fraction * budget.min_total / budget.grid)) * budget.grid)


def build_pruner(config: dict[str, Any], budget: Budget) -> Any:
    """An Optuna pruner from an ``early_terminate`` mapping (after ``from_wandb`` for W&B's hyperband)."""
    import optuna

    name = config.get("pruner", "median")
    args = resolve_args(config, budget)
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "wilcoxon": optuna.pruners.WilcoxonPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "peer": PeerPruner,
    }
    if name in pruners:
        return pruners[name](**args)
    if name == "patient":
        wrapped = args.pop("wrapped", None)
        warmup = config.get("warmup_fraction", 0.1)
        inner = build_pruner({**wrapped, "warmup_fraction": warmup}, budget) if wrapped else None
        return optuna.pruners.PatientPruner(inner, **args)
    return optuna.pruners.NopPruner()


@dataclass
class _Curve:
    optuna_trial: Any
    last_step: int = -1  # last grid point reported to Optuna
    smoothed: float | None = None
    reported: list[tuple[int, float]] = field(default_factory=list)


class PruningGate:
    """An Optuna study that trials report to, each at the common grid points of examples (or tokens) seen."""

    def __init__(self, pruner: Any, direction: str, grid: int, smoothing: float = 0.0, storage: str | None = None,
                 study_name: str = "sweeper", sampler: Any = None) -> None:  # fmt: skip
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), but got {smoothing=}.")
        self.grid = max(1, int(grid))
        self.smoothing = smoothing
        self.study = optuna.create_study(direction=direction, pruner=pruner, storage=storage, study_name=study_name,
                                         sampler=sampler, load_if_exists=True)  # fmt: skip
        self.curves: dict[str, _Curve] = {}

    def add(self, trial_id: str, params: dict[str, Any] | None = None, optuna_trial: Any = None) -> None:
        """Start following a trial (an Optuna trial already asked by a sampler, or a new one)."""
        trial = optuna_trial if optuna_trial is not None else self.study.ask()
        trial.set_user_attr("ray_trial_id", trial_id)
        for name, value in (params or {}).items():
            trial.set_user_attr(f"param:{name}", value)
        self.curves[trial_id] = _Curve(trial)

    def report(self, trial_id: str, step: int, value: float) -> bool:
        """Feed one logged value at ``step`` examples seen; True when the pruner says stop."""
        curve = self.curves[trial_id]
        if value is None or not math.isfinite(value):
            return False
        a = self.smoothing
        curve.smoothed = value if curve.smoothed is None else a * curve.smoothed + (1 - a) * value
        point = (int(step) // self.grid) * self.grid
        if point <= curve.last_step or point <= 0:
            return False
        curve.optuna_trial.report(curve.smoothed, point)
        curve.reported.append((point, curve.smoothed))
        curve.last_step = point
        return bool(curve.optuna_trial.should_prune())

    def still_prunes(self, trial_id: str) -> bool:
        """The pruner asked again on the trial's values so far (a paused trial: did the bar move below it?)."""
        curve = self.curves[trial_id]
        if curve.last_step <= 0:
            return False
        return bool(curve.optuna_trial.should_prune())

    def complete(self, trial_id: str, value: float | None) -> None:
        import optuna

        curve = self.curves.pop(trial_id, None)
        if curve is None:
            return
        if value is None or not math.isfinite(value):
            self.study.tell(curve.optuna_trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(curve.optuna_trial, value)

    def prune(self, trial_id: str) -> None:
        import optuna

        curve = self.curves.pop(trial_id, None)
        if curve is not None:
            self.study.tell(curve.optuna_trial, state=optuna.trial.TrialState.PRUNED)

    def fail(self, trial_id: str) -> None:
        import optuna

        curve = self.curves.pop(trial_id, None)
        if curve is not None:
            self.study.tell(curve.optuna_trial, state=optuna.trial.TrialState.FAIL)


def PeerPruner(percentile: float = 50.0, n_warmup_steps: int = 0, interval_steps: int = 1,  # noqa: N802
               n_min_peers: int = 1, noise_sigmas: float = 0.0) -> Any:  # fmt: skip
    """sweeper's pruner: Optuna's percentile rule against *every* trial that reached the same step.

    Optuna's Median/Percentile pruners compare only with COMPLETE trials, so at concurrency 2 nothing is
    pruned until a trial finishes. On the common grid of examples seen, running and pruned trials have
    values at the same steps too: this pruner compares with all of them (ASHA's insight, with Optuna's
    rule). A trial is stopped when its best value so far is below the ``percentile``-th best value of its
    peers at this step (50 = the median), given at least ``n_min_peers`` peers there.

    ``noise_sigmas`` > 0 makes it noise-aware and compares levels, not points: the trial's best mean of NOISE_WINDOW
    consecutive values against the ``percentile``-th of its peers' levels, and stops the trial only when it
    trails by more than ``noise_sigmas`` standard errors of that difference (noise estimated from the curves
    themselves, :func:`curve_noise`; the larger of the trial's own and its peers' median). With no noise estimate
    yet it is never stopped: near-ties are never cut.
    """
    import optuna

    class _PeerPruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            step = trial.last_step
            if step is None or step < n_warmup_steps or (step - n_warmup_steps) % interval_steps:
                return False
            states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING,
                      optuna.trial.TrialState.PRUNED)  # fmt: skip
            others = [t for t in study.get_trials(deepcopy=False, states=states) if t.number != trial.number]
            peers = [t.intermediate_values[step] for t in others if step in t.intermediate_values]
            if len(peers) < n_min_peers:
                return False
            values = [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            if noise_sigmas > 0:
                return _trails_beyond_noise(values, [_upto(t, step) for t in others if step in t.intermediate_values],
                                            maximize)  # fmt: skip
            best = max(values) if maximize else min(values)
            cut = _percentile(peers, 100 - percentile if maximize else percentile)
            return best < cut if maximize else best > cut

    def _trails_beyond_noise(values: list[float], peer_curves: list[list[float]], maximize: bool) -> bool:
        """Levels, not points: the trial's best mean of NOISE_WINDOW consecutive values so far, against each peer's
        mean of its last NOISE_WINDOW values. Stop only when the trial trails the peers' percentile level by more
        than noise_sigmas standard errors of the difference; with no noise estimate, never."""
        sign = 1.0 if maximize else -1.0
        signed = [sign * v for v in values]
        w = min(NOISE_WINDOW, len(signed))
        # the trial's best level so far (as the plain rule takes its best value): a bad stretch never cuts it
        own_level = max(sum(signed[i : i + w]) / w for i in range(len(signed) - w + 1))
        levels = [sum(c[-NOISE_WINDOW:]) / len(c[-NOISE_WINDOW:]) * sign for c in peer_curves if c]
        if not levels:
            return False
        noises = [n for c in [values, *peer_curves] if (n := curve_noise(c)) is not None]
        if not noises:
            return False  # no noise estimate yet: no evidence that this is more than a near-tie
        sigma = max(curve_noise(values) or 0.0, _percentile(noises, 50))
        cut = _percentile(levels, 100 - percentile)
        gap_sd = sigma * math.sqrt(1 / w + 1 / min(NOISE_WINDOW, min(len(c) for c in peer_curves if c)))
        return own_level < cut - noise_sigmas * gap_sd

    return _PeerPruner()


def _upto(trial: Any, step: int) -> list[float]:
    return [v for s, v in sorted(trial.intermediate_values.items()) if s <= step]


# Fewest points for a curve's own noise estimate: with fewer, a median of second differences is too rough.
MIN_NOISE_POINTS = 10
# Values averaged into a trial's level by the noise-aware rule (its standard error shrinks by sqrt of this).
NOISE_WINDOW = 5


def curve_noise(values: list[float]) -> float | None:
    """The noise of a curve around its trend: a robust standard deviation from its second differences.

    For values = smooth trend + white noise of sd sigma, the second difference v[i+1] - 2 v[i] + v[i-1] has sd
    sqrt(6) sigma while a locally linear trend cancels; the median absolute value / 0.6745 makes it robust to a
    few jumps. None with fewer than MIN_NOISE_POINTS values.
    """
    if len(values) < MIN_NOISE_POINTS:
        return None
    d2 = sorted(abs(values[i + 1] - 2 * values[i] + values[i - 1]) for i in range(1, len(values) - 1))
    mid = len(d2) // 2
    median = d2[mid] if len(d2) % 2 else (d2[mid - 1] + d2[mid]) / 2
    return median / 0.6745 / math.sqrt(6)


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def fail_stale_trials(storage: str, study_name: str) -> int:
    """After the driver died: Optuna trials still RUNNING are told FAIL (``sweeper/stale`` says why).

    `sweeper resume` reruns their Ray trials from scratch as new Optuna trials; a stale RUNNING trial would
    otherwise stay a peer forever (the peer pruner) or keep TPE waiting on it. Returns how many were failed.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study yet: the driver died before the first trial
        return 0
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, STALE, "driver died; rerun by sweeper resume")
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)
