"""Pause, don't kill, in a live Ray sweep on the tiny model: the eventual winner is paused, resumed, and wins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from sweeper.records.metrics import ELAPSED_S, EXAMPLES_SEEN, RESUMED_AT_STEP, STEP
from sweeper.records.store import best_trial, load_sweep, read_results

from .test_pruning_sweep import launch

pytestmark = pytest.mark.slow

# Optuna's threshold pruner with a bar (margins 0.5) that no trial reaches by its first decision (24 of 96
# examples): both are paused there, one at a time (max_concurrent_trials 1: the first one's pause frees the slot
# for the second). Then nothing runs and no trial is left to start: the one whose curve bounds higher (lr 3e-3)
# is resumed from its checkpoint and runs to its end; the other's bound cannot beat that winner: pruned.
SPEC = """
name: pausing
metric: {name: rewards/margins, goal: maximize}
parameters:
  learning_rate: {values: [1.0e-5, 3.0e-3]}
early_terminate: {type: optuna, pruner: threshold, lower: 0.5, warmup_fraction: 0.2, on_prune: pause}
model: {name_or_path: builtin:tiny-mistral, quantization: 4bit, lora: {r: 8, lora_alpha: 16, lora_dropout: 0.0}}
data: {path: builtin:synthetic, test_size: 0.1, max_length: 96}
training: {per_device_train_batch_size: 4, max_steps: 24, lr_scheduler_type: cosine, optim: paged_adamw_32bit,
           warmup_steps: 0.1, logging_steps: 2}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent_trials: 1}
"""


def run_pair(tmp_path: Path, name: str, text: str) -> tuple[Any, Any, Any, str]:
    """Launch the two-trial sweep ``text`` (named ``name``): (sweep, the lr 3e-3 trial, which completed, the lr 1e-5
    one, which was pruned, what the launch printed)."""
    (tmp_path / f"{name}.yaml").write_text(text)
    stdout = launch(tmp_path / f"{name}.yaml", tmp_path)
    sweep = load_sweep(tmp_path / "trials" / name)
    by_lr = {t.params["learning_rate"]: t for t in sweep.trials}
    winner, weak = by_lr[3e-3], by_lr[1e-5]
    assert (winner.status, weak.status) == ("completed", "pruned")
    return sweep, winner, weak, stdout


@pytest.mark.extended
def test_a_paused_trial_is_resumed_and_ends_as_the_winner(tmp_path: Path) -> None:
    sweep, winner, weak, stdout = run_pair(tmp_path, "pausing", SPEC)
    assert best_trial(sweep, "rewards/margins", "maximize") is winner

    # the records say what happened, with the examples seen at each event
    assert [(e["event"], e["examples_seen"]) for e in winner.events] == [("paused", 24), ("resumed", 24)]
    assert "no trial completed: the paused trial with the best upper bound" in winner.events[1]["reason"]
    assert [(e["event"], e["examples_seen"]) for e in weak.events] == [("paused", 24), ("pruned", 24)]
    assert weak.pruned is not None and weak.pruned["examples_seen"] == 24 and weak.pruned["saved_examples"] == 72
    assert "cannot beat the winner" in weak.pruned["reason"]
    # a paused trial frees its slot: the winner started after the weak trial was paused, before it was pruned
    first = read_results(winner.path / "result.json")[0]["timestamp"]
    assert int(weak.events[0]["time"]) <= first <= weak.events[1]["time"]

    # the resumed trial continued from its checkpoint: one run, every log step once, the work before the pause
    # counted (examples and seconds)
    assert [r[STEP] for r in winner.curve] == list(range(2, 25, 2))
    assert all(r.get(RESUMED_AT_STEP) == 6 for r in winner.curve if r[STEP] > 6)
    assert winner.final[EXAMPLES_SEEN] == 96
    assert winner.final[ELAPSED_S] > winner.curve[2][ELAPSED_S]
    assert "paused at 24 examples" in stdout and "resumed at 24 examples" in stdout
    assert stdout.count("resumed from its checkpoint") == 1 and stdout.count("started (") == 2
    tracked = [json.loads(line) for line in (tmp_path / "trials" / "pausing" / "tracking.jsonl").open()]
    for trial in (winner, weak):  # one tracking run per trial, paused or not
        assert [r["event"] for r in tracked if r.get("trial_id") == trial.trial_id and r["event"] != "result"] == [
            "start", "end"]  # fmt: skip

    db = tmp_path / "trials" / "pausing" / "optuna.db"
    study = optuna.load_study(study_name="pausing", storage=f"sqlite:///{db}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "PRUNED"]


# Breadth first with sweeper's peer pruner: the weak trial (lr 1e-5, first in the grid) reaches the first rung (the
# warm-up point, 24 of 96 examples) while the other is still to start, so it waits there instead of running to its
# end unchallenged. The strong trial (lr 3e-3) starts in its slot, is above it at the rung, and with nothing left
# to start runs to its end; the waiting trial, below that trial at the rung, cannot beat it: pruned where it waited.
BREADTH_FIRST = SPEC.replace("name: pausing", "name: breadth").replace(
    "pruner: threshold, lower: 0.5,", "pruner: peer, percentile: 25,").replace(
    "on_prune: pause}", "on_prune: pause, breadth_first: true}")  # fmt: skip


def test_breadth_first_the_first_trial_waits_at_the_rung_and_is_pruned_there(tmp_path: Path) -> None:
    assert "breadth_first: true" in BREADTH_FIRST and "pruner: peer" in BREADTH_FIRST
    _, winner, weak, stdout = run_pair(tmp_path, "breadth", BREADTH_FIRST)
    assert [(e["event"], e["examples_seen"]) for e in weak.events] == [("paused", 24), ("pruned", 24)]
    assert "breadth first: waits at the first rung" in weak.events[0]["reason"]
    assert "cannot beat the winner" in weak.pruned["reason"] and weak.pruned["saved_examples"] == 72
    assert winner.events == [] and winner.final[EXAMPLES_SEEN] == 96  # never paused: it ran straight through
    # the weak trial waited before the strong one started: without breadth first it would have run to its end
    first = read_results(winner.path / "result.json")[0]["timestamp"]
    assert weak.events[0]["time"] <= first + 1
    assert "paused at 24 examples" in stdout and stdout.count("started (") == 2
