"""A spec turned into what will run, before anything runs: trials and their settings, budget, memory, preflight.

``compile_plan(spec)`` compiles the spec once into a frozen ``SweepPlan``; the dry run, the preflight, the Tune
adapter, the shared-reference step and the report read it. Light layer (no torch, no ray).
"""

from __future__ import annotations

from sweeper.plan.budget import Budget, budget_of, common_grid
from sweeper.plan.compile import SweepPlan, TrialPlan, compile_plan, reference_group, sweep_budget
from sweeper.plan.pruning import GateSettings, from_wandb, gate_settings, never_prunes, pruning_metric
from sweeper.plan.settings import (
    TrialSettings,
    effective_batch,
    halve,
    planned_examples,
    recorded_settings,
    report_interval,
    resolve,
)
from sweeper.plan.space import corner_configs, expand, label, n_trials, swept_names

__all__ = [
    "Budget",
    "GateSettings",
    "SweepPlan",
    "TrialPlan",
    "TrialSettings",
    "budget_of",
    "common_grid",
    "compile_plan",
    "corner_configs",
    "effective_batch",
    "expand",
    "from_wandb",
    "never_prunes",
    "pruning_metric",
    "gate_settings",
    "halve",
    "label",
    "n_trials",
    "planned_examples",
    "recorded_settings",
    "reference_group",
    "report_interval",
    "resolve",
    "swept_names",
    "sweep_budget",
]
