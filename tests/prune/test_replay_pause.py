"""Replay with on_prune: pause: paused trials free their slot, the PauseBook decides on them, compute counted once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeper.__main__ import main
from sweeper.plan.budget import Budget
from sweeper.prune.replay import Curve, Replay, simulate

BUDGET = Budget(grid=8, min_total=96, max_total=96)  # warm-up: 16 examples
MEDIAN = {"type": "optuna", "pruner": "median"}
PEER = {"type": "optuna", "pruner": "peer"}


def curve(name: str, value: object) -> Curve:
    points = tuple((s, float(value(s))) for s in range(8, 97, 8))  # type: ignore[operator]
    return Curve(name, points, 96, points[-1][1])


# fast, then flat: leads early and ends at 1.024
LEADER = curve("leader", lambda s: 0.03 * s if s <= 32 else 0.96 + 0.001 * (s - 32))
# steady: below the leader at every early point, crosses it at about 68 examples and ends at 1.44
LATE = curve("late", lambda s: 0.015 * s)
FLAT = curve("flat", lambda s: 0.0)  # hopeless


def test_a_late_crosser_is_paused_resumed_at_the_end_and_wins() -> None:
    stop = simulate([LEADER, LATE], Replay(MEDIAN, "maximize", BUDGET))
    assert stop.pruned == {"late": 16} and not stop.winner_kept  # stopping loses the full-grid winner
    out = simulate([LEADER, LATE], Replay(MEDIAN, "maximize", BUDGET, on_prune="pause"))
    kinds = [(kind, at) for kind, at, _ in out.events["late"]]
    assert kinds == [("paused", 16), ("resumed", 16)]  # paused below the median, resumed where it paused
    # resumed at the end: its tail's line reaches 1.44 at 96 examples, above the winner's 1.024
    assert "could beat the winner's 1.024" in out.events["late"][1][2]
    assert out.winner == "late" and out.winner_kept and out.regret == 0.0  # it ran to its end and won
    assert out.spent == 96 + 96 == out.full  # its first 16 examples count once, not again at the resume
    assert (out.pauses, out.resumes) == (1, 1)


def test_a_hopeless_trial_is_paused_then_pruned_at_the_end() -> None:
    out = simulate([LEADER, FLAT], Replay(MEDIAN, "maximize", BUDGET, on_prune="pause"))
    kinds = [(kind, at) for kind, at, _ in out.events["flat"]]
    assert kinds == [("paused", 16), ("pruned", 16)]  # never resumed: pruned where it paused
    assert "its upper bound 0 cannot beat the winner's 1.024" in out.events["flat"][1][2]
    assert out.pruned == {"flat": 16} and out.winner_kept
    assert out.spent == 96 + 16  # the paused examples are spent, nothing more
    assert (out.pauses, out.resumes) == (1, 0)


def test_at_concurrency_2_a_pause_frees_the_slot_and_the_bar_can_fall_below_the_paused_trial() -> None:
    replay = Replay(PEER, "maximize", BUDGET, concurrency=2, on_prune="pause")
    out = simulate([LEADER, LATE, FLAT], replay)
    late = [(kind, at) for kind, at, _ in out.events["late"]]
    # paused beside the leader at 16; flat (started in its slot) pulls the peers' median down to late's 0.24, so
    # late resumes; paused again at 24 beside the leader; resumed at the end by its upper bound
    assert late == [("paused", 16), ("resumed", 16), ("paused", 24), ("resumed", 24)]
    assert out.events["late"][1][2] == "the bar fell below it"
    assert [(kind, at) for kind, at, _ in out.events["flat"]] == [("paused", 16), ("pruned", 16)]
    assert out.winner == "late" and out.winner_kept  # the late crosser is kept
    assert out.spent == 96 + 96 + 16  # each example once: late's two resumes continue where it paused
    assert (out.pauses, out.resumes) == (3, 2)
    stop = simulate([LEADER, LATE, FLAT], Replay(PEER, "maximize", BUDGET, concurrency=2))
    assert not stop.winner_kept and stop.events == {}  # on_prune: stop records no events and loses it


def test_stop_is_the_default_and_pause_needs_sweepers_gate() -> None:
    assert Replay(MEDIAN, "maximize", BUDGET).on_prune == "stop"  # as the spec's default

    class Other:  # a scheduler with the plain gate interface (Ray's ASHA in the benchmark): no still_prunes
        def add(self, trial_id: str) -> None: ...

    from sweeper.errors import TrialsError

    with pytest.raises(TrialsError, match="on_prune: pause needs sweeper's pruning gate"):
        simulate([LEADER], Replay(MEDIAN, "maximize", BUDGET, on_prune="pause"), gate=Other())


def test_replay_cli_on_prune_pause_prints_pauses_and_resumes(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    for c in (LEADER, LATE):
        rows = [{"step": s, "rewards/margins": v} for s, v in c.points]
        (tmp_path / f"{c.trial_id}.json").write_text(json.dumps(rows))
    files = [str(tmp_path / "leader.json"), str(tmp_path / "late.json")]
    assert main(["replay", *files, "--orders", "0"]) == 0
    out = capsys.readouterr().out
    # sweeper's default rule (peer 25, 5% warm-up, pause, breadth first) judges late at its first point (8 examples),
    # where one point has no trend to bound it by: this hand-made crosser, 2x behind until 70%, is lost
    assert "with sweeper's default rule: sweeper peer (breadth_first=True, percentile=25.0" in out
    assert "on_prune pause" in out and "winner late PRUNED" in out
    assert main(["replay", *files, "--orders", "0", "--pruner", "median"]) == 0
    out = capsys.readouterr().out
    assert "on_prune stop" in out and "winner late PRUNED" in out  # a named pruner stops, as the spec
    assert main(["replay", *files, "--orders", "2", "--pruner", "median", "--on-prune", "pause"]) == 0
    out = capsys.readouterr().out
    assert "on_prune pause" in out and "winner late kept" in out
    assert "      paused at 16 examples: below the pruner's bar" in out  # per trial, under its line
    assert "      resumed at 16 examples: its upper bound" in out
    assert "1 pause(s), 1 resume(s)" in out and "resumes" in out.splitlines()[-1]  # and per order
    assert main(["replay", *files, "--pruner", "asha", "--on-prune", "pause"]) == 2
    assert "--pruner asha has no pause rule" in capsys.readouterr().err


def test_breadth_first_the_first_trial_waits_at_the_rung_instead_of_running_unchallenged() -> None:
    # in this order without breadth first, the hopeless trial runs to its end: nobody is there to compare it with
    plain = simulate([FLAT, LEADER], Replay(PEER, "maximize", BUDGET, on_prune="pause"))
    assert plain.pruned == {} and plain.spent == 96 + 96
    replay = Replay({**PEER, "breadth_first": True}, "maximize", BUDGET, on_prune="pause")
    out = simulate([FLAT, LEADER], replay)
    flat = out.events["flat"]
    assert [(kind, at) for kind, at, _ in flat] == [("paused", 16), ("pruned", 16)]
    assert "breadth first: waits at the first rung (the warm-up point, 16)" in flat[0][2]
    assert "cannot beat the winner's 1.024" in flat[1][2]
    assert "leader" not in out.events  # the last trial to start does not wait: it runs straight through
    assert out.pruned == {"flat": 16} and out.winner_kept and out.spent == 96 + 16


def test_breadth_first_needs_pause() -> None:
    from pydantic import ValidationError

    from sweeper.config.spec import EarlyTerminate

    EarlyTerminate.model_validate({"type": "optuna", "pruner": "peer", "on_prune": "pause", "breadth_first": True})
    with pytest.raises(ValidationError, match="breadth_first: trials wait at the first rung paused, which needs "
                                              "on_prune: pause"):  # fmt: skip
        EarlyTerminate.model_validate({"type": "optuna", "pruner": "peer", "breadth_first": True})
