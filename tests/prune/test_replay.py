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
    assert main(["replay", str(good), "--pruner", "median", "--set", "n_startup=1"]) == 2
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


SHARED_CURVES = Path(__file__).resolve().parents[2].parent / "shared" / "curves"


def test_rows_without_a_step_fall_back_to_epoch_then_row_order_and_say_so(tmp_path: Path) -> None:
    by_epoch = tmp_path / "epoch.json"
    by_epoch.write_text(json.dumps([{"step": None, "epoch": e / 4, "rewards/margins": e} for e in range(1, 5)]))
    c = curves_from_log_history(by_epoch, "rewards/margins")
    assert c.points == ((250, 1.0), (500, 2.0), (750, 3.0), (1000, 4.0)) and "epoch" in c.label
    by_row = tmp_path / "rows.json"
    by_row.write_text(json.dumps({"log_history": [{"rewards/margins": v} for v in (0.1, 0.2, float("nan"), 0.3)]}))
    c = curves_from_log_history(by_row, "rewards/margins", examples_per_step=2)
    assert c.points == ((2, 0.1), (4, 0.2), (6, 0.3)) and "row order" in c.label  # NaN is no value


def test_a_folder_of_log_history_files_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, slope in (("a", 0.1), ("b", 0.01)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"step": s, "rewards/margins": slope * s, "loss": 0.6}
                                                           for s in range(1, 21)]))  # fmt: skip
    (tmp_path / "evalonly.json").write_text(json.dumps([{"step": 5, "eval_loss": 0.6}]))
    (tmp_path / "index.json").write_text("[]")
    assert main(["replay", str(tmp_path), "--orders", "0"]) == 0
    out = capsys.readouterr().out
    assert "Replaying 2 trial(s)" in out and "left out:" in out and "it logs eval_loss: pick one with --metric" in out
    assert "guard ok" in out


def test_replay_option_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "a.json"
    good.write_text(json.dumps([{"step": 1, "rewards/margins": 0.1}]))
    for args, text in ((["--concurrency", "0"], "--concurrency must be at least 1"),
                       (["--smoothing", "1.5"], "--smoothing is an EMA weight in [0, 1), got 1.5"),
                       (["--orders", "-1"], "--orders must be 0 or more")):  # fmt: skip
        assert main(["replay", str(good), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0]


def test_replay_with_rays_asha_and_wilcoxon_without_scipy(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    grid = str(Path(__file__).resolve().parents[2] / "benchmarks" / "recorded" / "cpu_grid12")
    assert main(["replay", grid, "--pruner", "asha", "--orders", "2"]) == 0
    assert "with Ray Tune ASHA (grace 10%, reduction 3)" in capsys.readouterr().out
    assert main(["replay", grid, "--pruner", "peer", "--orders", "0"]) == 0
    assert "with sweeper peer (" in capsys.readouterr().out
    if importlib.util.find_spec("scipy") is None:
        assert main(["replay", grid, "--pruner", "wilcoxon"]) == 2
        assert "WilcoxonPruner needs scipy, which is not installed: pip install scipy" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED_CURVES.is_dir(), reason="../shared/curves is not beside this checkout")
def test_no_traceback_on_any_shared_curve_file(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(p for p in SHARED_CURVES.rglob("*.json") if p.name not in ("index.json", "runs_index.json"))
    assert len(files) >= 15
    for path in files:
        for metric in ("rewards/margins", "eval_rewards/margins", "eval_loss"):
            code = main(["replay", str(path), "--metric", metric, "--orders", "0"])
            out, err = capsys.readouterr()
            assert code in (0, 2) and "Traceback" not in out + err, (path, metric)
            assert code == 0 or len(err.strip().splitlines()) == 1, (path, err)
