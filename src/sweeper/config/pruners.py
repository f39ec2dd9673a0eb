"""The pruner argument tables the spec validates ``early_terminate`` against (Optuna's names).

Light module: plain data, no imports.
"""

from __future__ import annotations

# Arguments each pruner takes (Optuna's names); sweeper's own keys are listed in OWN_KEYS.
PRUNER_ARGS: dict[str, frozenset[str]] = {
    "median": frozenset({"n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"}),
    "percentile": frozenset({"percentile", "n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"}),
    "successive_halving": frozenset({"min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"}),
    "hyperband": frozenset({"min_resource", "max_resource", "reduction_factor", "bootstrap_count"}),
    "wilcoxon": frozenset({"p_threshold", "n_startup_steps"}),
    "threshold": frozenset({"lower", "upper", "n_warmup_steps", "interval_steps"}),
    "patient": frozenset({"patience", "min_delta", "wrapped"}),
    "peer": frozenset({"percentile", "n_warmup_steps", "interval_steps", "n_min_peers", "noise_sigmas"}),
    "nop": frozenset(),
}


OWN_KEYS = frozenset({"type", "pruner", "step_unit", "smoothing", "guard", "warmup_fraction", "metric", "on_prune"})


WANDB_KEYS = frozenset({"type", "min_iter", "max_iter", "eta", "s", "strict"})
