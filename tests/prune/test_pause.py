"""Pause, don't kill: the decisions on paused trials, fed with hand-written curves (no training, no Ray)."""

from __future__ import annotations

import optuna
import pytest

from sweeper.prune.gate import PruningGate
from sweeper.prune.pause import MAX_PAUSES, PauseBook, event


def median_gate() -> PruningGate:
    return PruningGate(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0), "maximize", grid=8)


def feed(book: PauseBook, gate: PruningGate, trial: str, values: list[float]) -> bool:
    """Report values at 8, 16, ... examples; True when the gate says prune at the last one."""
    said = False
    for i, v in enumerate(values, start=1):
        book.observe(trial, 8 * i, v, flagged=False)
        said = gate.report(trial, 8 * i, v)
    return said


def test_a_paused_trial_resumes_when_the_bar_falls_below_it() -> None:
    gate, book = median_gate(), PauseBook(maximize=True)
    for t in ("a", "b", "c"):
        gate.add(t)
    feed(book, gate, "a", [1.0, 2.0])
    gate.complete("a", 2.0)
    book.complete("a", 2.0)
    assert feed(book, gate, "b", [0.5])  # below a's 1.0 at 8 examples: the median pruner says prune
    book.pause("b", {"sweeper/examples_seen": 8}, 0.5, "median", planned=16)
    assert book.why_resume("b", gate) is None  # nothing changed: it stays paused
    feed(book, gate, "c", [0.0, 0.1])
    gate.complete("c", 0.1)
    book.complete("c", 0.1)
    # the median of a (1.0) and c (0.0) at 8 examples is 0.5: b is no longer below it
    assert book.why_resume("b", gate) == "the bar fell below it"


def test_a_paused_trial_resumes_when_the_leader_degrades_or_is_flagged() -> None:
    gate, book = median_gate(), PauseBook(maximize=True)
    book.observe("leader", 8, 3.0, flagged=False)
    book.observe("b", 8, 1.0, flagged=False)
    book.pause("b", {"sweeper/examples_seen": 8}, 1.0, "median", planned=32)
    assert book.why_resume("b", gate) is None  # the leader (3.0) beats it
    book.observe("leader", 16, 0.8, flagged=False)  # the leader's margins collapse below b's
    assert book.why_resume("b", gate) == "the leader no longer beats it"
    book.observe("leader", 24, 5.0, flagged=False)  # it recovers: b waits again
    assert book.why_resume("b", gate) is None
    book.observe("leader", 32, 6.0, flagged=True)  # but the margin-hacking guard flags it
    assert book.leader(besides="b") is None  # a flagged trial is no leader
    assert book.why_resume("b", gate) == "every trial that beat it was flagged by the guard"


def test_a_trial_paused_while_it_led_waits_for_the_bar_or_the_end() -> None:
    # an absolute bar (Optuna's threshold pruner) pauses even the best trial: nothing but the end changes that
    gate, book = median_gate(), PauseBook(maximize=True)
    book.observe("a", 8, 0.1, flagged=False)
    book.observe("best", 8, 0.5, flagged=False)
    book.pause("a", {"sweeper/examples_seen": 8}, 0.1, "threshold", planned=32)
    book.pause("best", {"sweeper/examples_seen": 8}, 0.5, "threshold", planned=32)
    assert book.why_resume("best", gate) is None
    assert book.why_resume("a", gate) is None  # the paused best still beats it


def test_at_the_end_only_trials_whose_upper_bound_could_beat_the_winner_resume() -> None:
    book = PauseBook(maximize=True)
    for i, v in enumerate([0.5, 1.0, 1.5, 2.0], start=1):  # the winner ended at 2.0 after 32 examples
        book.observe("winner", 8 * i, v, flagged=False)
    book.complete("winner", 2.0)
    book.observe("rising", 8, 0.2, flagged=False)  # steep: its line reaches 3.2 at 32 examples
    book.observe("rising", 16, 1.2, flagged=False)
    book.observe("flat", 8, 0.2, flagged=False)  # flat at 0.2: it cannot reach 2.0
    book.observe("flat", 16, 0.2, flagged=False)
    for t in ("rising", "flat"):
        book.pause(t, {"sweeper/examples_seen": 16}, 0.2, "median", planned=32)
    assert book.upper_bound("rising") == pytest.approx(3.2)
    assert book.upper_bound("flat") == pytest.approx(0.2)
    assert book.endgame() == (["rising"], ["flat"])
    book.resume("rising", final=True)
    assert not book.may_pause("rising")  # resumed at the end, it runs to its end


def test_with_no_winner_yet_only_the_most_promising_paused_trial_resumes() -> None:
    book = PauseBook(maximize=False)  # lower is better (a loss)
    for t, values in {"x": [0.7, 0.6], "y": [0.7, 0.65], "z": [0.7, 0.69]}.items():
        for i, v in enumerate(values, start=1):
            book.observe(t, 8 * i, v, flagged=False)
        book.pause(t, {"sweeper/examples_seen": 16}, values[-1], "threshold", planned=64)
    assert book.endgame() == (["x"], [])  # steepest fall; the others wait for its final value


def test_a_trial_paused_too_often_is_pruned_next_time() -> None:
    book = PauseBook(maximize=True)
    for _ in range(MAX_PAUSES):
        assert book.may_pause("t")
        book.pause("t", {"sweeper/examples_seen": 8}, 0.1, "median", planned=32)
        book.resume("t")
    assert not book.may_pause("t")


def test_an_event_says_what_happened_and_at_how_many_examples() -> None:
    line = event("paused", {"sweeper/examples_seen": 24, "sweeper/step": 6}, 0.25, "median pruner", 12.5)
    assert line == {"event": "paused", "examples_seen": 24, "step": 6, "value": 0.25, "reason": "median pruner",
                    "time": 12.5}  # fmt: skip


def peer_gate() -> PruningGate:
    from sweeper.prune.gate import PeerPruner

    return PruningGate(PeerPruner(percentile=25.0, n_warmup_steps=16), "maximize", grid=8)


def test_breadth_first_a_trial_waits_once_per_rung_while_trials_are_to_come() -> None:
    gate, book = peer_gate(), PauseBook(maximize=True, rung=16)  # rungs at 16, 48, 144, ... examples
    assert [book.rung_of(s) for s in (8, 16, 40, 48, 150)] == [None, 16, 16, 48, 144]
    gate.add("a")
    assert not book.waits("a", 8, False, True, [], gate)  # before the first rung
    assert not book.waits("a", 16, False, False, [], gate)  # nobody to start or behind: no reason to wait
    assert not book.waits("a", 16, True, True, [], gate)  # its last log: it finishes
    assert book.waits("a", 16, False, True, [], gate)
    paused = book.wait("a", {"sweeper/examples_seen": 16}, 0.4, planned=96, below="peer pruner")
    assert paused.waiting and paused.reason.startswith("breadth first: waits at the first rung (the warm-up point, 16)")
    assert book.pauses.get("a", 0) == 0 and book.may_pause("a")  # a wait is not a pause below the bar
    book.resume("a")
    assert not book.waits("a", 24, False, True, [], gate)  # once per rung
    assert book.waits("a", 48, False, True, [], gate)  # and again at the next one
    assert "waits at the rung at 48" in book.wait("a", {}, 0.5, planned=96, below="peer pruner").reason
    assert not PauseBook(maximize=True).waits("a", 16, False, True, [], gate)  # not breadth first


def test_breadth_first_a_trial_waits_for_running_trials_short_of_its_rung() -> None:
    gate, book = peer_gate(), PauseBook(maximize=True, rung=16)
    for t in ("a", "b"):
        gate.add(t)
    book.waits("b", 8, False, False, ["a"], gate)  # b has reached 8
    assert book.waits("a", 16, False, False, ["b"], gate)  # b runs short of the rung: a waits for it
    assert not book.waits("c", 16, False, False, [], gate)  # nobody behind: c goes on


def test_breadth_first_once_no_trial_is_left_to_reach_the_rung_the_bar_there_decides() -> None:
    gate, book = peer_gate(), PauseBook(maximize=True, rung=16)
    for t in ("a", "b", "c"):
        gate.add(t)
    feed(book, gate, "a", [0.2, 0.5])  # a and b wait at 16 examples with 0.5 and 0.1
    assert book.waits("a", 16, False, True, [], gate)
    book.wait("a", {"sweeper/examples_seen": 16}, 0.5, planned=96, below="peer pruner")
    feed(book, gate, "b", [0.1, 0.1])
    book.waits("b", 16, False, True, [], gate)
    book.wait("b", {"sweeper/examples_seen": 16}, 0.1, planned=96, below="peer pruner")
    assert book.why_resume("a", gate, to_start=True) is None  # c is still to start
    feed(book, gate, "c", [0.3, 0.4])  # the last trial: above b, below a at the rung
    assert not book.waits("c", 16, False, False, [], gate)  # nobody to wait for: it goes on
    assert book.why_resume("a", gate) == "no trial is left to reach the rung (16) and it is above the bar there"
    assert book.why_resume("b", gate) is None  # below the bar there: it stays paused, as any trial below it
    b = book.paused["b"]
    assert not b.waiting and b.reason == "peer pruner" and b.beaten_by == 0.5 and book.pauses["b"] == 1
