"""The spec compiled once into a frozen plan: what the dry run, the preflight and the Tune adapter read."""

from __future__ import annotations

import dataclasses

import pytest

from sweeper.config.spec import parse_spec
from sweeper.plan import compile_plan, resolve

SPEC = {
    "name": "p", "method": "grid",
    "model": {"name_or_path": "builtin:tiny-mistral", "reference": "shared"},
    "data": {"path": "builtin:synthetic", "max_length": 96},
    "parameters": {"learning_rate": {"values": [1e-5, 1e-3]}, "gradient_accumulation_steps": {"values": [1, 2]},
                   "quantization": {"values": ["4bit", "none"]}},
    "training": {"per_device_train_batch_size": 4, "max_steps": 6},
    "early_terminate": {"type": "optuna", "pruner": "peer"},
}  # fmt: skip


def test_every_trial_is_compiled_with_its_settings_batch_length_memory_and_reference_group() -> None:
    plan = compile_plan(parse_spec(SPEC), n_train=100)
    assert len(plan.trials) == 8
    t = plan.trials[-1]  # lr 1e-3, accumulation 2, no quantization
    assert t.params == {"learning_rate": 1e-3, "gradient_accumulation_steps": 2, "quantization": "none"}
    assert (t.settings.training.learning_rate, t.settings.model.quantization) == (1e-3, "none")
    assert t.effective_batch == 8 and t.planned_examples == 6 * 8  # max_steps x effective batch
    assert t.predicted_gb is not None and not t.over  # a tiny model on an 80 GB GPU
    # the reference depends on the quantization, not on the learning rate or the accumulation: 2 groups
    assert len({x.reference_group for x in plan.trials}) == 2
    assert len(plan.shared_references()) == 2


def test_the_plan_and_its_settings_are_frozen() -> None:
    plan = compile_plan(parse_spec(SPEC))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.trials[0].over = True  # type: ignore[misc]
    with pytest.raises(Exception, match="frozen"):  # pydantic's frozen sections
        plan.trials[0].settings.training.learning_rate = 1.0  # type: ignore[misc]


def test_before_the_data_step_there_is_no_budget_and_no_gate() -> None:
    plan = compile_plan(parse_spec(SPEC))
    assert plan.n_train is None and plan.budget is None and plan.gate is None
    assert plan.trials[0].planned_examples is None


def test_the_gate_settings_are_built_whole_with_the_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plan = compile_plan(parse_spec(SPEC), n_train=100, storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert plan.budget is not None and plan.gate is not None
    assert plan.budget.grid == 8  # logging every step at effective batch 4 and 8: the common grid is 8 examples
    assert (plan.budget.min_total, plan.budget.max_total) == (24, 48)
    assert plan.gate.config["pruner"] == "peer" and plan.gate.budget == plan.budget
    assert plan.gate.infeasible == ()  # grid: the preflight leaves infeasible configs out instead
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.gate.infeasible = ({"params": {}},)  # type: ignore[misc]


def test_bayes_plans_its_corners_and_compiles_proposals_the_same_way(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = parse_spec({**SPEC, "method": "bayes", "run_cap": 4, "early_terminate": None,
                       "parameters": {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-5,
                                                        "max": 1e-3}}})  # fmt: skip
    rows = [{"params": {"learning_rate": 1e-4}, "reason": "oom", "batches_tried": [1]}]
    plan = compile_plan(spec, n_train=100, storage=f"sqlite:///{tmp_path / 'o.db'}", infeasible=rows)
    assert plan.trials == () and len(plan.corners) == 2  # proposed while running; the edges set the budget
    assert plan.gate is not None and plan.gate.infeasible == tuple(rows)  # TPE never proposes them again
    proposal = plan.trial({"learning_rate": 3e-4})
    assert proposal.settings == resolve(spec, {"learning_rate": 3e-4})
    assert proposal.planned_examples == 6 * 4


def test_without_leaves_out_the_preflights_infeasible_trials() -> None:
    plan = compile_plan(parse_spec(SPEC))
    dropped = plan.without([plan.trials[0].params, plan.trials[3].params])
    assert len(dropped.trials) == 6 and plan.trials[0] not in dropped.trials
    assert len(plan.trials) == 8  # the plan itself is unchanged
