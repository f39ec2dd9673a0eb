"""A spec turned into what will run, before anything runs: trial configs and settings, budget, memory, preflight.

Light layer (no torch, no ray): the dry run, the Tune adapter and the report read these figures.
"""

from __future__ import annotations

from sweeper.plan.budget import Budget, common_grid, sweep_budget
from sweeper.plan.space import (
    corner_configs,
    effective_batch,
    expand,
    halve,
    label,
    n_trials,
    planned_examples,
    report_interval,
    swept_names,
    trial_settings,
)

__all__ = [
    "Budget",
    "common_grid",
    "corner_configs",
    "effective_batch",
    "expand",
    "halve",
    "label",
    "n_trials",
    "planned_examples",
    "report_interval",
    "sweep_budget",
    "swept_names",
    "trial_settings",
]
