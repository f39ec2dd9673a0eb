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


OWN_KEYS = frozenset(
    {"type", "pruner", "step_unit", "smoothing", "guard", "warmup_fraction", "metric", "on_prune", "breadth_first"}
)


WANDB_KEYS = frozenset({"type", "min_iter", "max_iter", "eta", "s", "strict"})


# sweeper's default rule: what ``early_terminate: {type: optuna}`` with no pruner name, and ``replay`` of log_history
# files with no --pruner, use. The one rule that meets every pruning goal of benchmarks/pruning_replay.py (README,
# "Which pruner when"): sweeper's peer pruner at percentile 25 after a 5% warm-up, trials below the bar paused rather
# than stopped, breadth first. Keys the spec gives override it; with on_prune: stop breadth_first is off.
DEFAULT_RULE: dict[str, object] = {
    "pruner": "peer",
    "percentile": 25.0,
    "warmup_fraction": 0.05,
    "on_prune": "pause",
    "breadth_first": True,
}


def with_default_rule(early_terminate: dict[str, object]) -> dict[str, object]:
    """An ``early_terminate`` mapping of ``type: optuna`` with no pruner name, filled with DEFAULT_RULE (its own keys
    win)."""
    if early_terminate.get("type") != "optuna" or "pruner" in early_terminate:
        return early_terminate
    out = {**DEFAULT_RULE, **early_terminate}
    if out["on_prune"] != "pause" and "breadth_first" not in early_terminate:
        out["breadth_first"] = False
    return out
