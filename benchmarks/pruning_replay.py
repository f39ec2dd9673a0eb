"""Benchmark: pruners replayed on recorded DPO sweeps, side by side in one run.

For each sweep and pruner, averaged over random trial arrival orders, at concurrency 1 and 2:
  compute  = examples spent / examples of the full grid (lower is better)
  kept     = share of orders in which the full-grid winner survives (higher is better)
  regret   = (winner's final - best surviving final) / spread of finals (lower is better)

Sweeps: our own densely logged CPU sweeps (benchmarks/recorded/, copies of trials/<name> with only
sweep.json, params.json and result.json: smoke, sweeps/cpu_grid12.yaml, sweeps/cpu_grid24.yaml), and the
public curves in ../shared/curves (three unrelated single runs replayed as one pseudo-sweep on eval
margins: a format and sparsity check, not a sweep).
Pruners: Optuna's own (median, percentile 25, successive halving, hyperband, as configured by
sweeper: examples-seen grid, 10% warm-up, 1 startup trial), sweeper's peer pruner, and Ray Tune's own
AsyncHyperBandScheduler (ASHA, grace 10%, reduction 3) driven through the same simulator.

    python benchmarks/pruning_replay.py [--orders 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sweeper.config.spec import Spec
from sweeper.errors import TrialsError
from sweeper.plan.budget import Budget
from sweeper.prune.replay import (
    Curve,
    Replay,
    budget_of,
    curves_from_log_history,
    curves_from_sweep,
    simulate,
    sweep_config,
)
from sweeper.records.store import load_sweep
from sweeper.tune.asha import AshaGate

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "curves"

PRUNERS: dict[str, dict[str, Any]] = {
    "optuna median": {"pruner": "median"},
    "optuna percentile 25": {"pruner": "percentile", "percentile": 25.0},
    "optuna successive halving": {"pruner": "successive_halving"},
    "optuna hyperband": {"pruner": "hyperband"},
    "sweeper peer (median)": {"pruner": "peer"},
    "sweeper peer 25, warm-up 5%": {"pruner": "peer", "percentile": 25.0, "warmup_fraction": 0.05},
    "sweeper peer 25, noise 3σ": {"pruner": "peer", "percentile": 25.0, "warmup_fraction": 0.05, "noise_sigmas": 3.0},
    "sweeper peer 50, noise 3σ": {"pruner": "peer", "percentile": 50.0, "warmup_fraction": 0.05, "noise_sigmas": 3.0},
    "ray ASHA": {"asha": True},
}


def recorded_sweeps() -> list[tuple[str, list[Curve], Budget, str]]:
    out = []
    for folder in sorted((HERE / "recorded").iterdir()):
        sweep = load_sweep(folder)
        spec = Spec.model_validate(sweep.meta["spec"])
        _, budget, _ = sweep_config(spec, sweep.meta)
        out.append((f"{folder.name} ({len(sweep.trials)} trials)", curves_from_sweep(sweep, spec.metric.name),
                    budget, spec.metric.goal))  # fmt: skip
        held = curves_from_sweep(sweep, "eval_rewards/margins")
        if len(held) > 1:  # trials that evaluated during training: the held-out curve, what a pruner would read
            out.append((f"{folder.name} (eval margins)", held, budget, "maximize"))
    groups: dict[str, list[Curve]] = {}
    if (SHARED / "collected" / "index.json").is_file():  # public runs of one family: repeat groups, an lr x beta pair
        for row in json.loads((SHARED / "collected" / "index.json").read_text()):
            path = SHARED / "collected" / f"{row['run_id']}.json"
            if row.get("group", "single") != "single" and path.is_file():
                try:
                    groups.setdefault(row["group"], []).append(curves_from_log_history(path, "rewards/margins"))
                except TrialsError:
                    continue
    for name, curves in sorted(groups.items()):
        if len(curves) > 1:
            out.append((f"{name[:28]} ({len(curves)} runs)", curves, budget_of(curves), "maximize"))
    if (SHARED / "log_history").is_dir():
        index = {r.get("run_id"): r for r in json.loads((SHARED / "runs_index.json").read_text())}
        curves = []
        for path in sorted((SHARED / "log_history").glob("*.json")):
            batch = int(index.get(path.stem, {}).get("total_train_batch_size") or 1)
            curves.append(curves_from_log_history(path, "eval_rewards/margins", examples_per_step=batch))
        out.append((f"public curves ({len(curves)} runs, eval margins)", curves, budget_of(curves), "maximize"))
    return out


def score(curves: list[Curve], name: str, config: dict[str, Any], budget: Budget, direction: str,
          concurrency: int, orders: list[list[int]]) -> dict[str, float]:  # fmt: skip
    outcomes = []
    for order in orders:
        gate = AshaGate(budget, direction) if config.get("asha") else None
        full = {"type": "optuna", **config} if not config.get("asha") else {"type": "optuna", "pruner": "nop"}
        outcomes.append(simulate(curves, Replay(full, direction, budget, concurrency), order, gate=gate))
    return {
        "compute": statistics.mean(o.ratio for o in outcomes),
        "kept": statistics.mean(1.0 if o.winner_kept else 0.0 for o in outcomes),
        "regret": statistics.mean(o.regret for o in outcomes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=50, help="random arrival orders per cell (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import random

    started = time.monotonic()
    print(f"{'sweep':40} {'pruner':30} {'conc':>4} {'compute':>8} {'kept':>6} {'regret':>7}")
    for sweep_name, curves, budget, direction in recorded_sweeps():
        rng = random.Random(args.seed)
        orders = []
        for _ in range(args.orders):
            order = list(range(len(curves)))
            rng.shuffle(order)
            orders.append(order)
        winner = max(curves, key=lambda c: (c.final if c.final is not None else float("-inf"))
                     * (1 if direction == "maximize" else -1))  # fmt: skip
        floor = winner.total / sum(c.total for c in curves)
        print(f"{sweep_name:40} {'oracle (only the winner runs)':30} {'1-2':>4} {floor:>8.2f} {1.0:>6.2f} {0.0:>7.3f}")
        for pruner, config in PRUNERS.items():
            for concurrency in (1, 2):
                s = score(curves, pruner, config, budget, direction, concurrency, orders)
                print(f"{sweep_name:40} {pruner:30} {concurrency:>4} {s['compute']:>8.2f} {s['kept']:>6.2f} "
                      f"{s['regret']:>7.3f}", flush=True)  # fmt: skip
    print(f"({args.orders} orders per cell, {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
