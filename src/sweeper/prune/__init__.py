"""Pruning decisions as plain Python: the gate over an Optuna study, the margin-hacking guard, offline replay.

No Ray here: ``sweeper.tune`` calls the gate after every result, ``replay`` calls it on recorded curves.
"""

from __future__ import annotations

from sweeper.prune.gate import PruningGate, build_pruner, fail_stale_trials
from sweeper.prune.guard import is_flagged, verdict
from sweeper.prune.replay import replay_text
from sweeper.prune.study import build_gate, fixed_params, follow, forget_gate, optuna_distributions

__all__ = [
    "PruningGate",
    "build_gate",
    "build_pruner",
    "fail_stale_trials",
    "fixed_params",
    "follow",
    "forget_gate",
    "is_flagged",
    "optuna_distributions",
    "replay_text",
    "verdict",
]
