"""What the sweep's pruning gate is built from: the pruner and its arguments in the sweep's step unit, the study.

Built whole, once per launch, from the spec and the budget; ``sweeper.prune.study.build_gate`` turns it into
the Optuna study that the Ray scheduler and the bayes searcher share. Light module: plain data, no optuna.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweeper.config.spec import Spec
from sweeper.plan.budget import Budget


@dataclass(frozen=True)
class GateSettings:
    """Plain data, so that Ray Tune's deep copies of the scheduler and the searcher find the same gate by key."""

    key: str  # the one gate per sweep and storage (sweeper.prune.study keeps it by this key)
    config: dict[str, Any]  # early_terminate as Optuna pruner arguments (after from_wandb)
    budget: Budget
    direction: str  # "maximize" | "minimize"
    smoothing: float
    storage: str  # the Optuna study's storage URL (trials/<name>/optuna.db)
    study_name: str
    seed: int
    # configs ruled out before they run (out of memory at every batch in an earlier launch): the bayes searcher
    # never proposes them again
    infeasible: tuple[dict[str, Any], ...] = field(default=())


def gate_settings(spec: Spec, storage: str, budget: Budget,
                  infeasible: tuple[dict[str, Any], ...] = ()) -> GateSettings:  # fmt: skip
    et = spec.early_terminate
    if et is None:
        config: dict[str, Any] = {"type": "optuna", "pruner": "nop"}
    elif et.type == "hyperband":
        config = {**from_wandb(et.arguments, budget), "warmup_fraction": et.warmup_fraction}
    else:
        config = et.arguments
    return GateSettings(
        key=f"{storage}#{spec.name}",
        config=config,
        budget=budget,
        direction=spec.metric.goal,
        smoothing=et.smoothing if et else 0.0,
        storage=storage,
        study_name=spec.name,
        seed=spec.seed,
        infeasible=tuple(infeasible),
    )


def from_wandb(config: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """W&B's ``{type: hyperband, min_iter | max_iter + s, eta}`` as Optuna's HyperbandPruner.

    W&B counts ``min_iter``/``max_iter`` in logged results; one logged result here is one grid interval of
    examples. With ``max_iter`` and ``s``, W&B's smallest band is ``max_iter / eta**s`` (its hyperband_stopping):
    that becomes the minimum resource, so Optuna builds the same s + 1 rungs. ``strict: false`` is W&B's default.
    """
    eta = int(config.get("eta", 3))
    out: dict[str, Any] = {"type": "optuna", "pruner": "hyperband", "reduction_factor": eta}
    if "min_iter" in config:
        out["min_resource"] = int(config["min_iter"]) * budget.grid
    elif "max_iter" in config and "s" in config:
        out["min_resource"] = max(1, int(int(config["max_iter"]) / eta ** int(config["s"]))) * budget.grid
    if "max_iter" in config:
        out["max_resource"] = int(config["max_iter"]) * budget.grid
    return out


def never_prunes(spec: Spec, budget: Budget) -> str | None:
    """A warning when early termination can never fire: its first rung lies at or past the longest trial's end."""
    et = spec.early_terminate
    if et is None or et.type != "hyperband" or budget.grid <= 0:
        return None
    first = from_wandb(et.arguments, budget).get("min_resource")
    if first is None or first < budget.max_total:
        return None
    results = budget.max_total // budget.grid
    return (f"WARNING: early_terminate: hyperband's first rung comes after {first // budget.grid} logged results, "
            f"but the longest trial logs only {results}: nothing can be pruned; lower min_iter "
            "(or max_iter/s)")  # fmt: skip


def pruning_metric(spec: Spec) -> str:
    """What the pruner reads: ``early_terminate.metric``, else the held-out ``eval_`` version of the sweep's metric
    when the trials evaluate (``training.eval_steps``), else the sweep's metric."""
    et = spec.early_terminate
    if et is not None and et.metric:
        return et.metric
    name = spec.metric.name
    if spec.training.eval_steps is not None and not name.startswith("eval_") and f"eval_{name}" in _eval_names():
        return f"eval_{name}"
    return name


def _eval_names() -> frozenset[str]:
    from sweeper.config.metricnames import KNOWN_METRICS

    return KNOWN_METRICS
