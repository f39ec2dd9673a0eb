"""The recorded real sweep (benchmarks/recorded/smollm2_grid12): SmolLM2-135M-Instruct on shipped orca rows, 4
learning rates x 3 betas, every step logged, held-out evaluation every 8 steps; the material of the pruning
benchmark. Checks the recording is what the benchmark and README say it is, and that replay reads it."""

from __future__ import annotations

import pytest

from sweeper.__main__ import main
from sweeper.prune.replay import curves_from_sweep
from sweeper.records.store import load_sweep

from ..conftest import ROOT

REAL = ROOT / "benchmarks" / "recorded" / "smollm2_grid12"


def test_the_recording_is_a_real_12_trial_sweep_logged_every_step() -> None:
    sweep = load_sweep(REAL)
    spec = sweep.meta["spec"]
    assert spec["model"]["name_or_path"] == "builtin:smollm2-135m-instruct"
    assert spec["data"]["path"] == "builtin:orca_dpo_pairs"
    assert sweep.by_status() == {"completed": 12}
    for t in sweep.trials:
        train = [r for r in t.curve if "rewards/margins" in r]
        held = [r for r in t.curve if "eval_rewards/margins" in r]
        assert [r["sweeper/step"] for r in train][:40] == list(range(1, 41)), t.trial_id
        assert len({r["sweeper/step"] for r in held}) == 5, t.trial_id  # steps 8, 16, 24, 32, 40
    train_curves = curves_from_sweep(sweep, "rewards/margins")
    assert len(train_curves) == 12 and all(len(c.points) >= 40 for c in train_curves)


def test_replay_reads_the_real_recording(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(REAL), "--pruner", "peer", "--metric", "eval_rewards/margins", "--orders", "3"]) == 0
    out = capsys.readouterr().out
    assert "Replaying 12 trial(s)" in out and "over 3 random orders" in out
