"""Ray Tune's AsyncHyperBandScheduler (ASHA) behind sweeper's gate interface, for replays side by side with
sweeper's own pruners (``python -m sweeper replay --pruner asha``, benchmarks/pruning_replay.py).

The scheduler is Ray's own object, fed the same examples-seen axis and values as the PruningGate; no Ray
cluster starts. Lives in ``tune/``, the one layer that imports ray.
"""

from __future__ import annotations

from sweeper.plan.budget import Budget

__all__ = ["AshaGate"]


class AshaGate:
    """Ray Tune's AsyncHyperBandScheduler behind the PruningGate interface (add/report/prune/complete)."""

    def __init__(self, budget: Budget, direction: str, grace_fraction: float = 0.1, reduction_factor: int = 3):
        from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

        self.stop = TrialScheduler.STOP
        self.scheduler = AsyncHyperBandScheduler(
            time_attr="examples",
            metric="value",
            mode="max" if direction == "maximize" else "min",
            max_t=budget.max_total,
            grace_period=max(budget.grid, int(grace_fraction * budget.min_total)),
            reduction_factor=reduction_factor,
        )
        self.trials: dict[str, _Trial] = {}

    def add(self, trial_id: str) -> None:
        self.trials[trial_id] = _Trial(trial_id)
        self.scheduler.on_trial_add(None, self.trials[trial_id])

    def report(self, trial_id: str, step: int, value: float) -> bool:
        result = {"examples": step, "value": value}
        return self.scheduler.on_trial_result(None, self.trials[trial_id], result) == self.stop

    def prune(self, trial_id: str) -> None:
        self.scheduler.on_trial_remove(None, self.trials.pop(trial_id))

    def complete(self, trial_id: str, value: float | None) -> None:
        trial = self.trials.pop(trial_id)
        self.scheduler.on_trial_complete(None, trial, {"examples": 0, "value": value})


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
