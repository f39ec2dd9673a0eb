"""The scheduler's decision after one result, fed by hand (Optuna test style): no Ray, no training."""

from __future__ import annotations

from sweeper.plan import Budget
from sweeper.prune.decide import pruned_record, stop_reason
from sweeper.prune.gate import PruningGate, build_pruner

BUDGET = Budget(grid=8, min_total=48, max_total=48)


def gate() -> PruningGate:
    g = PruningGate(build_pruner({"pruner": "peer", "percentile": 50, "n_warmup_steps": 8}, BUDGET), "maximize", 8)
    g.add("leader")
    g.add("laggard")
    return g


def test_a_trial_below_its_peer_is_stopped_and_the_reason_names_the_rule() -> None:
    g = gate()
    assert stop_reason(g, "leader", 16, 0.5, why="peer pruner on rewards/margins") is None  # no peer there yet
    assert stop_reason(g, "laggard", 16, 0.1, why="peer pruner on rewards/margins") == "peer pruner on rewards/margins"


def test_a_trial_at_its_last_log_is_never_stopped() -> None:
    g = gate()
    stop_reason(g, "leader", 16, 0.5)
    assert stop_reason(g, "laggard", 16, 0.1, at_end=True) is None  # it finishes and counts as completed


def test_the_guard_stops_a_flagged_trial_only_in_prune_mode() -> None:
    g = gate()
    flagged = "flagged: loss 0.0001 with margins 16.2 (loss ~0 with huge margins)"
    assert stop_reason(g, "leader", 16, 9.0, verdict=flagged, guard="flag") is None  # flag: reported, not stopped
    assert stop_reason(g, "leader", 24, 9.0, verdict=flagged, guard="prune") == f"margin-hacking guard: {flagged}"


def test_a_missing_value_is_no_evidence() -> None:
    g = gate()
    stop_reason(g, "leader", 16, 0.5)
    assert stop_reason(g, "laggard", 16, None) is None  # an eval-only result carries no train metric


def test_pruned_record_counts_what_was_not_spent() -> None:
    result = {"sweeper/step": 4, "sweeper/examples_seen": 16, "sweeper/elapsed_s": 8.0, "sweeper/tokens_seen": 900}
    record = pruned_record(result, planned=48, value=0.1, reason="peer pruner")
    assert record == {
        "step": 4,
        "examples_seen": 16,
        "tokens_seen": 900,
        "value": 0.1,
        "reason": "peer pruner",
        "planned_examples": 48,
        "saved_examples": 32,
        "saved_s": 16.0,
    }  # 2 examples/s: 32 in 16 s
