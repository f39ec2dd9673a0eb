"""The spec compiled once: every trial's params, resolved settings, effective batch, planned examples, predicted
memory and reference group, with the sweep's budget and gate settings. Frozen: nothing downstream re-derives them.

``compile_plan(spec)`` is what the dry run and the preflight read; after the data step, ``compile_plan(spec,
n_train=...)`` adds the planned lengths, the pruning budget and the gate settings that the Tune adapter runs on.
For ``method: bayes`` the trials are proposed while the sweep runs: the plan holds the corners of the space
(for the budget and the shared references) and ``SweepPlan.trial(params)`` compiles a proposal the same way.
Light module: no torch, no ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sweeper.config.spec import Spec
from sweeper.plan import estimate
from sweeper.plan.budget import Budget, budget_of
from sweeper.plan.pruning import GateSettings, gate_settings
from sweeper.plan.settings import TrialSettings, planned_examples, resolve
from sweeper.plan.space import corner_configs, expand
from sweeper.records.refcache import signature


def reference_group(settings: TrialSettings) -> str:
    """What one trial's reference log-probs depend on: trials with the same group share them (reference: shared).
    The reference cache's own rule (records.refcache.signature), so the group and the cache key never disagree."""
    return signature(settings.as_dict())


@dataclass(frozen=True)
class TrialPlan:
    params: dict[str, Any]  # the swept values (what Ray's trial config and the records carry)
    settings: TrialSettings
    predicted_gb: float | None  # peak GPU memory on one GPU; None when the model's shape is unknown
    over: bool  # the prediction band's upper end is above resources.gpu_memory_gb
    planned_examples: int | None  # examples it trains on if it runs to the end; None before the data step
    reference_group: str
    predicted_band: tuple[float, float] | None = None  # (low, high) GiB: estimate.predict_band

    @property
    def effective_batch(self) -> int:
        return self.settings.effective_batch


@dataclass(frozen=True)
class SweepPlan:
    spec: Spec
    trials: tuple[TrialPlan, ...]  # what runs (grid, random); bayes: none listed, proposed while running
    corners: tuple[TrialPlan, ...]  # the edges of the space (bayes), else the trials: budget, shared references
    coef: float  # the activation coefficient the memory predictions use
    n_train: int | None = None
    budget: Budget | None = None
    gate: GateSettings | None = None  # the Optuna study behind pruning and bayes; None when neither is on

    @property
    def configs(self) -> list[dict[str, Any]]:
        return [t.params for t in self.trials]

    def trial(self, params: Mapping[str, Any]) -> TrialPlan:
        """The plan of one trial: a listed one, or a bayes proposal compiled exactly as the listed ones are."""
        for t in self.trials:
            if t.params == params:
                return t
        return _trial(self.spec, dict(params), self.coef, self.n_train)

    def without(self, params: Iterable[Mapping[str, Any]]) -> SweepPlan:
        """The plan less the trials with these params (the preflight's infeasible ones)."""
        drop = [dict(p) for p in params]
        return dataclasses.replace(self, trials=tuple(t for t in self.trials if t.params not in drop))

    def shared_references(self) -> dict[str, TrialSettings]:
        """One trial's settings per distinct reference that ``model.reference: shared`` trials read."""
        out: dict[str, TrialSettings] = {}
        for t in self.trials or self.corners:
            if t.settings.model.reference == "shared":
                out.setdefault(t.reference_group, t.settings)
        return out


def _trial(spec: Spec, params: dict[str, Any], coef: float, n_train: int | None) -> TrialPlan:
    settings = resolve(spec, params)
    gb = estimate.predict_settings(settings, coef=coef)
    band = estimate.predict_band(settings, coef=coef)
    return TrialPlan(
        params=params,
        settings=settings,
        predicted_gb=None if gb is None else round(gb, 1),
        over=band is not None and band[1] > spec.resources.gpu_memory_gb,
        predicted_band=None if band is None else (round(band[0], 1), round(band[1], 1)),
        planned_examples=None if n_train is None else planned_examples(settings.training, n_train),
        reference_group=reference_group(settings),
    )


def compile_plan(
    spec: Spec,
    n_train: int | None = None,
    tokens_per_example: float = 1.0,
    storage: str | None = None,
    infeasible: Iterable[dict[str, Any]] = (),
    coef: float = estimate.ACTIVATION_COEF,
) -> SweepPlan:
    """The sweep's plan. ``n_train`` (training rows after the data step) adds planned lengths and the budget;
    ``storage`` (the Optuna study's URL) adds the gate settings, with ``infeasible`` rows from earlier launches."""
    trials = tuple(_trial(spec, p, coef, n_train) for p in expand(spec))
    corners = trials if spec.method != "bayes" else tuple(_trial(spec, p, coef, n_train) for p in corner_configs(spec))
    budget = None if n_train is None else _budget(spec, corners, n_train, tokens_per_example)
    gate = None
    if budget is not None and storage is not None and (spec.early_terminate is not None or spec.method == "bayes"):
        gate = gate_settings(spec, storage, budget, tuple(infeasible) if spec.method == "bayes" else ())
    return SweepPlan(spec, trials, corners, coef, n_train, budget, gate)


def _budget(spec: Spec, corners: tuple[TrialPlan, ...], n_train: int, tokens_per_example: float) -> Budget:
    et = spec.early_terminate
    scale = tokens_per_example if et is not None and et.step_unit == "tokens" else 1.0
    return budget_of([t.settings.training for t in corners], n_train, scale)


def sweep_budget(spec: Spec, n_train: int, tokens_per_example: float = 1.0) -> Budget:
    """The budget of a sweep on ``n_train`` training rows (replay of a recorded sweep, tests)."""
    budget = compile_plan(spec, n_train, tokens_per_example).budget
    assert budget is not None
    return budget
