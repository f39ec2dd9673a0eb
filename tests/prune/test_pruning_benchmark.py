"""benchmarks/pruning_replay.py's own arithmetic: the decision floor, the held-out early-stop share and the verdict
against the pruning goals, on hand-made curves (the full benchmark replays every recorded sweep: not in CI)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from sweeper.plan.budget import Budget
from sweeper.prune.curves import Curve

from ..conftest import ROOT

_spec = importlib.util.spec_from_file_location("pruning_replay", ROOT / "benchmarks" / "pruning_replay.py")
bench = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["pruning_replay"] = bench  # dataclasses look their module up by name
_spec.loader.exec_module(bench)  # type: ignore[union-attr]


def curve(name: str, values: list[float], every: int = 10) -> Curve:
    points = tuple((every * (i + 1), v) for i, v in enumerate(values))
    return Curve(name, points, points[-1][0], values[-1])


def test_decision_floor_runs_the_winner_and_stops_the_others_at_their_first_point() -> None:
    curves = [curve("a", [0.1, 0.2, 0.3, 0.4]), curve("b", [0.2, 0.4, 0.6, 0.8]), curve("c", [0.0, 0.1, 0.1, 0.1])]
    b = bench.Bench("three", curves, Budget(grid=10, min_total=40, max_total=40), "maximize", "real")
    # b runs its 40 examples; a and c stop at 10 each (their first point after a 5% warm-up of 40 = 2 examples)
    assert bench.decision_floor(b) == pytest.approx(60 / 120)


def test_early_stop_share_ends_each_curve_one_evaluation_after_its_peak() -> None:
    peaked = curve("p", [0.5, 0.9, 0.7, 0.6, 0.5])  # peak at 20, stop at 30 of 50
    rising = curve("r", [0.1, 0.2, 0.3, 0.4, 0.5])  # peak at its end: runs all 50
    assert bench.early_stop_share([peaked, rising], "maximize") == pytest.approx(80 / 100)
    falling = curve("f", [0.9, 0.7, 0.6, 0.5, 0.4])  # a loss: its minimum is its last point
    assert bench.early_stop_share([falling], "minimize") == pytest.approx(1.0)
    assert bench.early_stop_share([peaked], "minimize") == pytest.approx(0.4)  # a tie keeps the first: 0.5 at 10


def test_summary_names_each_missed_goal_and_passes_a_rule_that_meets_them() -> None:
    benches = [
        bench.Bench("real one", [], Budget(grid=1, min_total=1, max_total=1), "maximize", "real"),
        bench.Bench("cpu_grid12 (12 trials)", [], Budget(grid=1, min_total=1, max_total=1), "maximize", "toy"),
    ]
    rows = {}
    for pruner in bench.PRUNERS:
        for conc in (1, 2):
            rows[("real one", pruner, conc)] = {"compute": 0.7, "kept": 0.9, "regret": 0.1}
            rows[("cpu_grid12 (12 trials)", pruner, conc)] = {"compute": 0.3, "kept": 1.0, "regret": 0.0}
    good = "sweeper peer 25 + pause"
    for conc in (1, 2):
        rows[("real one", good, conc)] = {"compute": 0.5, "kept": 1.0, "regret": 0.0}
        rows[("cpu_grid12 (12 trials)", good, conc)] = {"compute": 0.25, "kept": 1.0, "regret": 0.0}
    lines = bench.summary(rows, benches, floor=0.4)
    verdicts = {(ln[:34].strip(), ln[35:39].strip()): ln for ln in lines[3:]}
    assert verdicts[(good, "1")].endswith("meets every goal") and verdicts[(good, "2")].endswith("meets every goal")
    median = verdicts[("optuna median", "1")]
    assert "kept 0.90 < 0.99" in median and "compute 0.70 > 0.60" in median and "cpu_grid12 0.30" in median
    assert "worse than ASHA" not in median  # equal to ASHA is not worse


def test_in_a_repeat_group_the_winner_is_the_config_and_any_of_its_runs_keeps_it() -> None:
    # two runs of one config: the second ends 0.01 higher but trails at every earlier point, so median stops it
    first, second = curve("first", [0.5, 0.8, 1.0, 1.10]), curve("second", [0.4, 0.7, 0.9, 1.11])
    budget = Budget(grid=10, min_total=40, max_total=40)
    config = {"pruner": "median"}
    distinct = bench.score([first, second], config, budget, "maximize", 1, [[0, 1]])
    assert distinct["kept"] == 0.0 and distinct["kept_run"] == 0.0 and distinct["regret"] == 1.0
    repeat = bench.score([first, second], config, budget, "maximize", 1, [[0, 1]], repeat=True)
    assert repeat["kept"] == 1.0 and repeat["kept_run"] == 0.0 and repeat["regret"] == 0.0
    assert repeat["compute"] == distinct["compute"] < 1.0
