"""Replay: simulated scheduling of recorded curves through a pruner, deterministic, at any concurrency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeper.__main__ import main
from sweeper.plan.budget import Budget
from sweeper.prune.replay import Curve, Replay, curves_from_log_history, over_orders, simulate

BUDGET = Budget(grid=8, min_total=96, max_total=96)
MEDIAN = {"type": "optuna", "pruner": "median"}


def curve(name: str, slope: float) -> Curve:
    points = tuple((s, slope * s) for s in range(8, 97, 8))
    return Curve(name, points, 96, points[-1][1])


CURVES = [curve("best", 0.010), curve("ok", 0.008), curve("bad", 0.001), curve("worst", -0.001)]


def test_best_first_prunes_the_rest_early() -> None:
    out = simulate(CURVES, Replay(MEDIAN, "maximize", BUDGET))
    assert set(out.pruned) == {"ok", "bad", "worst"}  # all below the finished best trial after warm-up
    assert all(step == 16 for step in out.pruned.values())  # at the first decision point
    assert out.spent == 96 + 3 * 16 and out.full == 4 * 96
    assert out.winner == "best" and out.winner_kept and out.regret == 0.0


def test_order_matters_and_is_reproducible() -> None:
    worst_first = simulate(CURVES, Replay(MEDIAN, "maximize", BUDGET), order=[3, 2, 1, 0])
    assert worst_first.pruned == {}  # each new trial beats the median of those before it
    assert worst_first.ratio == 1.0
    again = over_orders(CURVES, Replay(MEDIAN, "maximize", BUDGET), n_orders=10, seed=1)
    assert again == over_orders(CURVES, Replay(MEDIAN, "maximize", BUDGET), n_orders=10, seed=1)


def test_median_loses_its_saving_at_concurrency_2() -> None:
    # Two at a time: nothing has completed when the first two are judged (RECIPES.md's anchor).
    serial = simulate(CURVES, Replay(MEDIAN, "maximize", BUDGET, concurrency=1))
    parallel = simulate(CURVES, Replay(MEDIAN, "maximize", BUDGET, concurrency=2))
    assert "ok" not in parallel.pruned  # it ran beside "best", with no finished trial to compare to
    assert parallel.ratio > serial.ratio


def test_peer_pruner_keeps_its_saving_at_concurrency_2() -> None:
    peer = {"type": "optuna", "pruner": "peer"}
    parallel = simulate(CURVES, Replay(peer, "maximize", BUDGET, concurrency=2))
    assert "ok" in parallel.pruned  # judged against "best" running beside it, not against finished trials
    assert parallel.winner_kept
    median = simulate(CURVES, Replay(MEDIAN, "maximize", BUDGET, concurrency=2))
    assert parallel.ratio < median.ratio


def test_regret_when_the_winner_is_pruned() -> None:
    late_bloomer = Curve("late", tuple((s, 0.0 if s < 64 else 0.05 * (s - 56)) for s in range(8, 97, 8)), 96, 2.0)
    out = simulate([curve("steady", 0.01), late_bloomer], Replay(MEDIAN, "maximize", BUDGET))
    assert out.winner == "late" and not out.winner_kept
    assert out.regret == pytest.approx(1.0)  # the only survivor is the worst of the two


def test_log_history_files(tmp_path: Path) -> None:
    rows = [{"step": s, "epoch": s / 10, "rewards/margins": 0.1 * s} for s in range(1, 11)]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"log_history": rows}))
    c = curves_from_log_history(path, "rewards/margins", examples_per_step=4)
    assert c.points[0] == (4, 0.1) and c.total == 40 and c.final == pytest.approx(1.0)


def test_replay_cli_on_log_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, slope in (("a", 0.1), ("b", 0.01)):
        rows = [{"step": s, "rewards/margins": slope * s} for s in range(1, 21)]
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    code = main(["replay", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--orders", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "b : pruned at" in out.replace("b: pruned", "b : pruned")
    assert "winner a kept" in out


def test_replay_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "missing.json")]) == 2
    assert "no such file or sweep folder" in capsys.readouterr().err
    good = tmp_path / "a.json"
    good.write_text(json.dumps([{"step": 1, "rewards/margins": 0.1}]))
    assert main(["replay", str(good), "--set", "n_startup=1"]) == 2
    assert "did you mean 'n_startup_trials'" in capsys.readouterr().err


def test_replay_infers_the_goal_from_a_loss_like_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, slope in (("good", -0.02), ("bad", -0.001)):  # eval loss falls faster for the good run
        rows = [{"step": s, "eval_loss": 0.7 + slope * s, "entropy": 1.5} for s in range(1, 21)]
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    files = [str(tmp_path / "good.json"), str(tmp_path / "bad.json")]
    assert main(["replay", *files, "--metric", "eval_loss", "--orders", "0"]) == 0
    out = capsys.readouterr().out
    assert "on eval_loss (minimize)" in out and "goal minimize inferred from the metric's name 'eval_loss'" in out
    assert "winner good kept" in out  # maximizing would have named the worst run the winner
    assert main(["replay", *files, "--metric", "entropy"]) == 2
    assert "cannot tell whether to maximize or minimize 'entropy' from its name: pass --goal" in capsys.readouterr().err
