"""The pruning budget of a sweep, known before it runs: the common comparison grid and the trials' lengths.

Light module: imports neither torch, ray nor optuna.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sweeper.config.spec import TrainingSection
from sweeper.plan.settings import planned_examples, report_interval


@dataclass(frozen=True)
class Budget:
    """What the pruner needs to know about the sweep's trials, in the step unit (examples or tokens)."""

    grid: int  # distance between comparison points, common to all trials
    min_total: int  # planned length of the shortest trial
    max_total: int  # planned length of the longest trial


def budget_of(trainings: Sequence[TrainingSection], n_train: int, scale: float = 1.0) -> Budget:
    """The budget of trials with these training settings on ``n_train`` rows; ``scale`` converts examples to the
    step unit (tokens per example when the gate counts tokens)."""
    totals = [planned_examples(t, n_train) for t in trainings]
    return Budget(
        grid=max(1, int(common_grid([report_interval(t) for t in trainings]) * scale)),
        min_total=max(1, int(min(totals) * scale)),
        max_total=max(1, int(max(totals) * scale)),
    )


def common_grid(report_intervals: list[int]) -> int:
    """One comparison interval for trials that report every ``report_intervals[i]`` examples.

    The least common multiple puts every trial's reports exactly on the grid; when that grows past
    4x the largest interval (odd batch sizes from random search), the largest interval is used.
    """
    intervals = [max(1, int(i)) for i in report_intervals] or [1]
    lcm = math.lcm(*intervals)
    return lcm if lcm <= 4 * max(intervals) else max(intervals)
