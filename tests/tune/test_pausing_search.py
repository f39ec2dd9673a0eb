"""A pausing sweep's search algorithm: max_concurrent_trials counts running trials, not paused ones (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sweeper.config.spec import parse_spec
from sweeper.plan import compile_plan
from sweeper.prune.pause import forget_book, pause_book

pytest.importorskip("ray")


def plan(tmp_path: Path, method: str) -> Any:
    space = ({"learning_rate": {"values": [1e-3, 1e-4, 1e-5]}} if method == "grid" else
             {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}})  # fmt: skip
    spec = parse_spec({
        "name": "p", "method": method, **({"run_cap": 3} if method == "bayes" else {}), "parameters": space,
        "early_terminate": {"type": "optuna", "pruner": "median", "on_prune": "pause"},
        "model": {"name_or_path": "builtin:tiny-mistral"}, "data": {"path": "builtin:synthetic"},
        "training": {"max_steps": 8}, "resources": {"max_concurrent_trials": 1},
    })  # fmt: skip
    return compile_plan(spec, n_train=32, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_a_paused_trial_frees_its_slot_in_the_grid(tmp_path: Path) -> None:
    from ray.tune.experiment import Experiment

    from sweeper.tune.raytune import _search

    p = plan(tmp_path, "grid")
    search = _search(p, str(tmp_path / "p"))
    assert search.max_concurrent is None  # Tune's own limit would count paused trials as live
    variants = search.searcher
    variants.add_configurations([Experiment("p", lambda config: None, config=search.param_space)])
    first = variants.next_trial()
    assert first is not None and variants.next_trial() is None  # one at a time
    pause_book(p.gate.key, True).pause(first.trial_id, {}, 0.1, "median", planned=32)
    second = variants.next_trial()
    assert second is not None and variants.next_trial() is None  # the paused one's slot went to the next
    pause_book(p.gate.key, True).resume(first.trial_id)
    variants.on_trial_complete(second.trial_id)
    assert variants.next_trial() is None  # the resumed trial holds the slot again
    forget_book(p.gate.key)


def test_a_paused_trial_frees_its_slot_for_the_next_proposal(tmp_path: Path) -> None:
    from ray.tune.search import ConcurrencyLimiter

    from sweeper.tune.raytune import _search

    p = plan(tmp_path, "bayes")
    limiter = _search(p, str(tmp_path / "p")).searcher
    assert isinstance(limiter, ConcurrencyLimiter)
    assert limiter.suggest("t1") is not None and limiter.suggest("t2") is None
    pause_book(p.gate.key, True).pause("t1", {}, 0.1, "median", planned=32)
    assert limiter.suggest("t2") is not None and limiter.suggest("t3") is None
    forget_book(p.gate.key)
