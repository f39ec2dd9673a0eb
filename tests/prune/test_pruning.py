"""Pruning decisions on hand-written curves (Optuna's own test style: a comment per assert), no training."""

from __future__ import annotations

import json

import optuna
import pytest

from sweeper.plan import from_wandb
from sweeper.plan.budget import Budget, common_grid
from sweeper.prune.gate import PruningGate, build_pruner, resolve_args, warmup_steps
from sweeper.prune.guard import is_flagged, verdict

from ..conftest import ROOT

BUDGET = Budget(grid=8, min_total=96, max_total=192)


def gate(config: dict, smoothing: float = 0.0, budget: Budget = BUDGET) -> PruningGate:
    return PruningGate(build_pruner(config, budget), "maximize", budget.grid, smoothing=smoothing)


def run(g: PruningGate, trial_id: str, curve: list[tuple[int, float]]) -> int | None:
    """Feed a curve; return the examples seen at which it was pruned, or None after completing it."""
    g.add(trial_id)
    for step, value in curve:
        if g.report(trial_id, step, value):
            g.prune(trial_id)
            return step
    g.complete(trial_id, curve[-1][1])
    return None


def rising(slope: float, every: int = 8, until: int = 96) -> list[tuple[int, float]]:
    return [(s, slope * s) for s in range(every, until + 1, every)]


def test_common_grid() -> None:
    assert common_grid([8, 16]) == 16  # every trial's reports land on the grid
    assert common_grid([24, 40]) == 120  # lcm while it stays within 4x the largest interval
    assert common_grid([7, 11, 13]) == 13  # odd sizes from random search: the largest interval


def test_warmup_default_skips_the_zero_start() -> None:
    assert warmup_steps({}, BUDGET) == 16  # 10% of 96 examples, rounded up to the grid
    assert warmup_steps({"warmup_fraction": 0.0}, BUDGET) == 8  # never before the first grid point
    args = resolve_args({"pruner": "median"}, BUDGET)
    assert args["n_warmup_steps"] == 16 and args["n_startup_trials"] == 1


def test_median_prunes_a_flat_curve_after_warmup_only() -> None:
    g = gate({"pruner": "median"})
    assert run(g, "good", rising(0.01)) is None  # the first trial completes (startup)
    # A LoRA trial's first margins are exactly 0: inside the warm-up that is no reason to stop.
    g.add("flat")
    assert not g.report("flat", 8, 0.0)  # inside the warm-up (first decision at 16 examples)
    assert g.report("flat", 16, 0.0)  # past it, below the median of completed trials at 16 examples
    g.prune("flat")
    states = [t.state for t in g.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]


def test_fair_steps_compare_different_batches_at_equal_examples() -> None:
    # Trial A: effective batch 4, logs every 2 steps = 8 examples; trial B: batch 8 logs every 16 examples.
    g = gate({"pruner": "median"}, budget=Budget(grid=common_grid([8, 16]), min_total=96, max_total=96))
    assert run(g, "a", rising(0.01, every=8)) is None
    # B learns as fast per example: never pruned although it reports half as often.
    assert run(g, "b", rising(0.0101, every=16)) is None
    steps = [sorted(t.intermediate_values) for t in g.study.trials]
    assert steps[0] == steps[1] == [16, 32, 48, 64, 80, 96]  # both on the same grid points


def test_a_dip_does_not_prune_but_a_lucky_spike_delays_pruning() -> None:
    # Optuna's percentile pruners judge a trial by its best value so far: dips are forgiven...
    dip = [(s, 0.015 * s) for s in range(8, 97, 8)]
    dip[4] = (40, 0.3)  # one bad batch, below the reference trial's 0.4
    g = gate({"pruner": "median"})
    run(g, "good", rising(0.01))
    assert run(g, "dip", dip) is None
    # ...but one lucky batch keeps a weak trial alive until the reference passes it.
    spike = [(s, 0.005 * s) for s in range(8, 97, 8)]
    spike[1] = (16, 0.5)
    raw = gate({"pruner": "median"})
    run(raw, "good", rising(0.01))
    assert run(raw, "weak", spike) == 56  # raw: alive until the reference reaches 0.5
    smooth = gate({"pruner": "median"}, smoothing=0.6)
    run(smooth, "good", rising(0.01))
    assert run(smooth, "weak", spike) == 32  # EMA on both curves: the spike is damped, pruned 24 examples sooner


def test_successive_halving_prunes_the_weak_one() -> None:
    g = gate({"pruner": "successive_halving", "reduction_factor": 2})
    assert run(g, "good", rising(0.01)) is None
    assert run(g, "bad", rising(0.001)) is not None  # below the rung's top half


def test_peer_compares_with_running_trials() -> None:
    g = gate({"pruner": "peer"})
    g.add("a")
    g.add("b")
    # Both running, nothing completed: Optuna's median could not decide here; the peer rule can.
    assert not g.report("a", 8, 0.08)  # warm-up
    assert not g.report("b", 8, 0.01)
    assert not g.report("a", 16, 0.16)  # a leads: no reason to stop it
    assert g.report("b", 16, 0.02)  # b's best so far is below its only peer at 16 examples
    g.prune("b")
    g.add("c")
    assert not g.report("c", 16, 0.5)  # above the median of a (running) and b (pruned) at 16


def test_pruner_mapping() -> None:
    assert isinstance(build_pruner({"pruner": "percentile", "percentile": 25}, BUDGET), optuna.pruners.PercentilePruner)
    assert isinstance(build_pruner({"pruner": "hyperband"}, BUDGET), optuna.pruners.HyperbandPruner)
    assert (
        resolve_args({"pruner": "hyperband"}, BUDGET)["max_resource"] == 192
    )  # Optuna's "auto" needs a finished trial
    patient = build_pruner({"pruner": "patient", "patience": 2, "wrapped": {"pruner": "median"}}, BUDGET)
    assert isinstance(patient, optuna.pruners.PatientPruner)
    assert isinstance(build_pruner({"pruner": "threshold", "lower": 0.0}, BUDGET), optuna.pruners.ThresholdPruner)
    assert isinstance(build_pruner({"pruner": "wilcoxon"}, BUDGET), optuna.pruners.WilcoxonPruner)
    assert isinstance(build_pruner({"pruner": "nop"}, BUDGET), optuna.pruners.NopPruner)


def test_wandb_hyperband_maps_to_optuna_hyperband() -> None:
    config = from_wandb({"type": "hyperband", "min_iter": 3, "eta": 2}, BUDGET)
    assert config == {"type": "optuna", "pruner": "hyperband", "reduction_factor": 2, "min_resource": 24}
    assert isinstance(build_pruner(config, BUDGET), optuna.pruners.HyperbandPruner)
    assert resolve_args(config, BUDGET)["min_resource"] == 24  # 3 logged results x 8 examples each


def test_threshold_prunes_a_negative_margin() -> None:
    g = gate({"pruner": "threshold", "lower": 0.0})
    assert run(g, "negative", [(8, 0.0), (16, 0.0), (24, -0.2)]) == 24


@pytest.mark.parametrize("smoothing", [-0.1, 1.0])
def test_smoothing_bounds(smoothing: float) -> None:
    with pytest.raises(ValueError, match="smoothing must be in"):
        PruningGate(optuna.pruners.NopPruner(), "maximize", 8, smoothing=smoothing)


# --- the margin-hacking guard -------------------------------------------------------------------


def healthy() -> list[dict]:
    return [{"loss": 0.69 - 0.02 * i, "rewards/margins": 0.05 * i, "rewards/accuracies": min(1.0, 0.5 + 0.05 * i),
             "logps/chosen": -180.0 - i, "logps/rejected": -185.0 - 2 * i} for i in range(20)]  # fmt: skip


def test_guard_passes_a_healthy_curve() -> None:
    assert verdict(healthy()) == "ok"


def test_guard_flags_loss_zero_with_huge_margins() -> None:
    rows = healthy() + [{"loss": 0.001, "rewards/margins": 120.0, "rewards/accuracies": 1.0}]
    text = verdict(rows)
    assert is_flagged(text) and "degenerate" in text


def test_guard_flags_collapsing_chosen_logprobs() -> None:
    # rewards/chosen = beta x (policy - reference) on the same batch: -14 at beta 0.1 is 140 nats below the
    # reference, more than half the chosen answers' -220 at the start
    rows = [{"logps/chosen": -180.0 - 40 * i, "rewards/chosen": -0.8 * i, "rewards/margins": 0.5 * i}
            for i in range(20)]  # fmt: skip
    assert "chosen log-probs fell 14" in verdict(rows, beta=0.1)
    assert verdict(rows, beta=1.0) == "ok"  # at beta 1 the same rewards are a 14-nat drop: within the noise


def test_guard_flags_collapsing_held_out_chosen_logprobs() -> None:
    evals = [{"eval_logps/chosen": -180.0 - 60 * i} for i in range(4)]  # the same held-out rows each time
    assert "held-out chosen log-probs fell from -180 to -360" in verdict(evals)


def test_guard_passes_a_healthy_run_whose_train_logprobs_jump_between_batches() -> None:
    # Real SmolLM2 run at lr 5e-6: logps/chosen from -114.8 to -194 between batches of different answers, while
    # rewards/chosen (the same examples under policy and reference) never moved more than 0.007
    level = [-114.8, -150.2, -121.0, -188.5, -160.3, -175.9, -140.0, -194.0, -170.1, -183.3, -190.6, -194.0]
    rows = [{"logps/chosen": v, "rewards/chosen": 0.0006 * ((-1) ** i) * i, "rewards/margins": 0.001 * i}
            for i, v in enumerate(level)]  # fmt: skip
    assert verdict(rows, beta=0.1) == "ok"


def test_guard_ignores_batch_to_batch_noise_in_train_logprobs() -> None:
    # Real CPU run (../shared/curves): summed train log-probs jump with batch lengths, no trend.
    rows = [{"logps/chosen": v} for v in (-179, -175, -294, -261, -111, -146, -157, -148)]
    assert verdict(rows) == "ok"


def test_guard_flags_overfitting() -> None:
    evals = [{"eval_loss": 0.49 + 0.05 * i, "eval_rewards/margins": 1.0 + i} for i in range(5)]
    assert "overfitting" in verdict(evals)


def test_guard_flags_pinned_accuracy_only_with_huge_margins() -> None:
    pinned = [{"rewards/accuracies": 1.0, "rewards/margins": 2.0 * i} for i in range(1, 10)]
    assert "pinned" in verdict(pinned)  # margins reach 18
    small = [{"rewards/accuracies": 1.0, "rewards/margins": 0.1 * i} for i in range(1, 10)]
    assert verdict(small) == "ok"  # a tiny synthetic set is learned perfectly: fine


SHARED_CURVES = ROOT.parent / "shared" / "curves"
# every real public curve and its verdict: flagged ones name the pathology their source reported
REAL_VERDICTS = {
    "log_history/zephyr-7b-beta": "overfitting",
    "log_history/mamba-2.8b-zephyr": "ok",
    "log_history/cpu_smollm2_run0_lr5e-05_beta0.1_bs2_ga2_len256_8steps": "ok",
    "collected/jonolsen_qwen2.5-7b_vgpt2v3_sql_dpo_v1_llamafactory_lora": "degenerate",
    "collected/kithara_trl_gemma-2-2b_qlora_dpo_10steps_lr5e-5": "degenerate",
    "collected/prapatsorn_gpt2_rmstatic_dpo_lr1e-3_b0.1": "degenerate",
    "collected/tooba26_gpt2_fullhhrlhf1000_dpo_lr5e-5_b0.1_16ep": "overfitting",
    "collected/igabhix_llama3.1-8b_kp-astrology_dpo_lora_run_2026-02-16": "ok",
    "collected/mastersubhajit_qwen2.5-1.5b_truthy_lora_exp1_lr5e-05_b0.1": "ok",
    "collected/ucegbe_qwen2.5-0.5b_hhrlhf_qlora_dpo_lr5e-5_b0.1": "ok",
}


@pytest.mark.parametrize(("name", "expected"), REAL_VERDICTS.items(), ids=[n.split("/")[1][:40] for n in REAL_VERDICTS])
def test_guard_verdicts_on_real_public_curves(name: str, expected: str) -> None:
    data = json.loads((SHARED_CURVES / f"{name}.json").read_text())
    rows = data.get("log_history", data) if isinstance(data, dict) else data
    text = verdict(rows)
    assert (text == "ok") if expected == "ok" else (is_flagged(text) and expected in text), text


def noisy(level: float, slope: float, noise: float, seed: int, until: int = 192) -> list[tuple[int, float]]:
    """A rising curve with white noise of sd ``noise`` (the kind real batch-2 margins show)."""
    import random

    rng = random.Random(seed)
    return [(s, level + slope * s + rng.gauss(0.0, noise)) for s in range(8, until + 1, 8)]


def test_curve_noise_reads_the_scatter_not_the_trend() -> None:
    from sweeper.prune.gate import curve_noise

    assert curve_noise([0.1 * i for i in range(20)]) == pytest.approx(0.0, abs=1e-12)  # a straight line: no noise
    estimate = curve_noise([v for _, v in noisy(0.0, 0.01, 0.5, seed=1, until=800)])
    assert estimate is not None and 0.35 < estimate < 0.7  # sd 0.5 recovered within sampling error
    assert curve_noise([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) is None  # too few points to tell


def test_a_noise_aware_peer_never_cuts_a_trial_inside_the_noise_band() -> None:
    config = {"pruner": "peer", "noise_sigmas": 3.0, "warmup_fraction": 0.05}
    for seed in range(20):
        g = gate(config)
        assert run(g, "leader", noisy(1.0, 0.002, 0.5, seed)) is None
        # 0.3 below the leader with noise sd 0.5: a near-tie that a plain peer rule cuts in some draws
        assert run(g, "near", noisy(0.7, 0.002, 0.5, seed + 100)) is None, seed
    cut_by_plain_rule = 0
    for seed in range(20):
        g = gate({"pruner": "peer", "warmup_fraction": 0.05})
        run(g, "leader", noisy(1.0, 0.002, 0.5, seed))
        cut_by_plain_rule += run(g, "near", noisy(0.7, 0.002, 0.5, seed + 100)) is not None
    assert cut_by_plain_rule >= 5  # the same near-ties that the noise-blind rule cuts


def test_a_noise_aware_peer_still_cuts_a_trial_far_below() -> None:
    g = gate({"pruner": "peer", "noise_sigmas": 3.0, "warmup_fraction": 0.05})
    assert run(g, "leader", noisy(3.0, 0.01, 0.2, seed=1)) is None
    stopped = run(g, "far", noisy(0.0, 0.0, 0.2, seed=2))
    assert stopped is not None and stopped <= 96  # 3 below with noise 0.2: out once its noise is known (10 points)
