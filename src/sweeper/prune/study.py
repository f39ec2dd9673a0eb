"""The sweep's Optuna study: the one PruningGate per sweep, built from its GateSettings (sweeper.plan.pruning),
and the search space as Optuna distributions (for ``method: bayes``).

Ray Tune deep-copies schedulers and searchers, so they carry the GateSettings and find the sweep's gate here,
by key, at first use (both run in the driver). Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from typing import Any

from sweeper.config.spec import Spec
from sweeper.plan.pruning import GateSettings
from sweeper.prune.gate import PruningGate, build_pruner

_GATES: dict[str, PruningGate] = {}


def build_gate(settings: GateSettings) -> PruningGate:
    """The sweep's PruningGate: built at first use, then the same object for every caller in this process."""
    gate = _GATES.get(settings.key)
    if gate is None:
        import optuna

        gate = PruningGate(
            build_pruner(settings.config, settings.budget),
            settings.direction,
            settings.budget.grid,
            smoothing=settings.smoothing,
            storage=settings.storage,
            study_name=settings.study_name,
            sampler=optuna.samplers.TPESampler(seed=settings.seed),
        )
        _GATES[settings.key] = gate
    return gate


def forget_gate(settings: GateSettings) -> None:
    """Drop the sweep's gate, so that the next build_gate opens the study afresh (a new run in this process)."""
    _GATES.pop(settings.key, None)


def follow(gate: PruningGate, spec: Spec, trial_id: str, params: dict[str, Any]) -> None:
    """Start following a Ray trial in the gate (once), its swept values recorded as the Optuna trial's params with
    the spec's distributions (grid and random too: optuna-dashboard's parallel coordinates, slices and
    importances, and ``optuna.importance``, read them). The params are enqueued and asked with those
    distributions, so Optuna records exactly the values Ray runs; a bayes trial seen here was proposed before (a
    rerun after `sweeper resume`) and TPE learns it the same way."""
    if trial_id in gate.curves:
        return
    distributions = optuna_distributions(spec)
    if not distributions:
        gate.add(trial_id, params)
        return
    known = {n: v for n, v in params.items() if n in distributions and _inside(distributions[n], v)}
    gate.study.enqueue_trial(known)
    gate.add(trial_id, params, optuna_trial=gate.study.ask({n: distributions[n] for n in known}))


def _inside(distribution: Any, value: Any) -> bool:
    """Whether Optuna's distribution holds this value (a q_uniform draw rounded past min is not)."""
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


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
