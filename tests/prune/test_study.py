"""The sweep's Optuna study holds every trial's swept values as params with the spec's distributions, so that
optuna-dashboard and optuna.importance see them (grid and random too, not only bayes)."""

from __future__ import annotations

import optuna

from sweeper.config.spec import parse_spec
from sweeper.plan.budget import Budget
from sweeper.prune.gate import PruningGate, build_pruner
from sweeper.prune.study import follow

BASE = {"name": "t", "model": {"name_or_path": "builtin:tiny-mistral"}, "data": {"path": "builtin:synthetic"}}


def test_grid_trials_are_recorded_as_optuna_params_with_their_distributions() -> None:
    spec = parse_spec({**BASE, "parameters": {"learning_rate": {"values": [1e-4, 1e-3, 3e-3]},
                                              "beta": {"values": [0.1, 0.3]}, "seed": {"value": 7}}})  # fmt: skip
    gate = PruningGate(build_pruner({"pruner": "nop"}, Budget(8, 96, 96)), "maximize", 8)
    configs = [{"learning_rate": lr, "beta": b, "seed": 7} for lr in (1e-4, 1e-3, 3e-3) for b in (0.1, 0.3)]
    for i, params in enumerate(configs):
        follow(gate, spec, f"t{i}", params)
        gate.report(f"t{i}", 8, params["learning_rate"] * 100)
        gate.complete(f"t{i}", params["learning_rate"] * 100 + params["beta"])
    trials = gate.study.get_trials()
    assert [t.params for t in trials] == [{"learning_rate": c["learning_rate"], "beta": c["beta"]} for c in configs]
    assert isinstance(trials[0].distributions["learning_rate"], optuna.distributions.CategoricalDistribution)
    importances = optuna.importance.get_param_importances(
        gate.study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
    )
    assert set(importances) == {"learning_rate", "beta"}


def test_random_trials_keep_their_sampled_float_values() -> None:
    spec = parse_spec({**BASE, "method": "random", "run_cap": 3,
                       "parameters": {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-5,
                                                        "max": 1e-3}}})  # fmt: skip
    gate = PruningGate(build_pruner({"pruner": "nop"}, Budget(8, 96, 96)), "maximize", 8)
    follow(gate, spec, "a", {"learning_rate": 3.3e-5})
    trial = gate.study.get_trials()[0]
    assert trial.params == {"learning_rate": 3.3e-5}
    assert trial.distributions["learning_rate"].log
