"""The sweep's Optuna study: its settings as plain data, the one PruningGate per sweep built from them, and
the search space as Optuna distributions (for ``method: bayes``).

Ray Tune deep-copies schedulers and searchers, so they carry ``gate_settings`` and find the sweep's gate here,
by key, at first use (both run in the driver). Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from typing import Any

from sweeper.config.spec import Spec

_GATES: dict[str, Any] = {}


def gate_settings(spec: Spec, storage: str, budget: Any) -> dict[str, Any]:
    """Plain data that build_gate turns into the sweep's PruningGate."""
    from sweeper.prune.gate import from_wandb

    et = spec.early_terminate
    if et is None:
        config: dict[str, Any] = {"type": "optuna", "pruner": "nop"}
    elif et.type == "hyperband":
        config = {**from_wandb(et.arguments, budget), "warmup_fraction": et.warmup_fraction}
    else:
        config = et.arguments
    return {
        "key": f"{storage}#{spec.name}",
        "config": config,
        "budget": budget,
        "direction": spec.metric.goal,
        "smoothing": et.smoothing if et else 0.0,
        "storage": storage,
        "study_name": spec.name,
        "seed": spec.seed,
    }


def build_gate(settings: dict[str, Any]) -> Any:
    from sweeper.prune.gate import PruningGate, build_pruner

    gate = _GATES.get(settings["key"])
    if gate is None:
        import optuna

        gate = PruningGate(
            build_pruner(settings["config"], settings["budget"]),
            settings["direction"],
            settings["budget"].grid,
            smoothing=settings["smoothing"],
            storage=settings["storage"],
            study_name=settings["study_name"],
            sampler=optuna.samplers.TPESampler(seed=settings["seed"]),
        )
        _GATES[settings["key"]] = gate
    return gate


def forget_gate(settings: dict[str, Any]) -> None:
    """Drop the sweep's gate, so that the next build_gate opens the study afresh (a new run in this process)."""
    _GATES.pop(settings["key"], None)


def optuna_distributions(spec: Spec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sweeper.config.spec import parameter_values

    out: dict[str, Any] = {}
    for name, p in spec.parameters.items():
        kind = p.kind
        if kind == "value":
            continue
        if kind in ("values", "categorical"):
            out[name] = CategoricalDistribution(parameter_values(name, p))
        elif kind == "int_uniform":
            out[name] = IntDistribution(int(p.min or 0), int(p.max or 0))
        else:
            out[name] = FloatDistribution(float(p.min or 0), float(p.max or 0), log=kind == "log_uniform_values",
                                          step=p.q if kind == "q_uniform" else None)  # fmt: skip
    return out


def fixed_params(spec: Spec) -> dict[str, Any]:
    from sweeper.config.spec import parameter_values

    return {n: parameter_values(n, p)[0] for n, p in spec.parameters.items() if p.kind == "value"}
