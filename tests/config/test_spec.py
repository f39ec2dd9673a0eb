"""Sweep specs: the shipped ones parse, malformed ones give one ERROR line, exit code 2 and write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.__main__ import main
from sweeper.config.spec import load_spec, parse_spec
from sweeper.errors import SpecError
from sweeper.plan import effective_batch, expand, resolve, swept_names

from ..conftest import ROOT

MINIMAL = {"name": "t", "model": {"name_or_path": "m"}, "data": {"path": "d"}}


def test_exit_code_2_from_the_real_command(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", "launch", str(ROOT / "tests" / "bad_inputs" / "specs" / "bad_goal.yaml"),
         "--dry-run"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("ERROR: ")
    assert "Traceback" not in proc.stderr


def test_missing_spec_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", "sweeps/nope.yaml", "--dry-run"]) == 2
    assert "sweeps/nope.yaml: spec file not found" in capsys.readouterr().err


def test_several_problems_are_all_listed() -> None:
    raw = {**MINIMAL, "training": {"learning_rate": -1, "optim": "adam"}, "method": "nope"}
    with pytest.raises(SpecError) as info:
        parse_spec(raw, "s.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("s.yaml: ") for line in lines)


@pytest.mark.parametrize("written", ["1e-6", "1.0e-6", 1e-6])
def test_scientific_notation_both_ways(written: object) -> None:
    # PyYAML reads 1e-6 as a string and 1.0e-6 as a float: both are a learning rate.
    spec = parse_spec({**MINIMAL, "training": {"learning_rate": written},
                       "parameters": {"learning_rate": {"values": [written, "5e-5"]}}})  # fmt: skip
    assert spec.training.learning_rate == 1e-6
    assert [c["learning_rate"] for c in expand(spec)] == [1e-6, 5e-5]


def test_smoke_spec() -> None:
    spec = load_spec(ROOT / "sweeps" / "smoke.yaml")
    configs = expand(spec)
    assert len(configs) == 4
    assert spec.model.quantization == "4bit"
    assert swept_names(spec) == ["learning_rate", "gradient_accumulation_steps"]


def test_lr_grid_reproduces_the_seed_grid() -> None:
    spec = load_spec(ROOT / "sweeps" / "lr_grid.yaml")
    configs = expand(spec)
    assert len(configs) == 6
    assert spec.model.name_or_path == "mistralai/Mistral-7B-Instruct-v0.2"
    assert spec.data.path == "Intel/orca_dpo_pairs"
    assert (spec.training.optim, spec.training.lr_scheduler_type) == ("paged_adamw_32bit", "cosine")
    batches = sorted(effective_batch(resolve(spec, c).training) for c in configs)
    assert batches == [64, 64, 64, 128, 128, 128]
    assert {c["learning_rate"] for c in configs} == {1e-5, 5e-5, 5e-4}


def test_dry_run_prints_trials_with_effective_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", str(ROOT / "sweeps" / "lr_grid.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(table) == 6
    assert sorted(row[4] for row in table) == ["128", "128", "128", "64", "64", "64"]  # effective batch
    # the seed's grid prunes with sweeper's default rule, and the dry run says what that is
    assert ("early_terminate: sweeper peer (percentile 25), warm-up 5%, on_prune pause, breadth first on "
            "rewards/margins per examples seen") in out  # fmt: skip


def test_dry_run_tips_that_margins_scale_with_a_swept_beta(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", str(ROOT / "sweeps" / "cpu_grid24.yaml"), "--dry-run"]) == 0
    assert "tip: beta is swept and rewards/margins is beta × a log-ratio" in capsys.readouterr().out
    assert main(["launch", str(ROOT / "sweeps" / "lr_grid.yaml"), "--dry-run"]) == 0  # beta fixed: no tip
    assert "beta is swept" not in capsys.readouterr().out


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`launch --dry-run | head -1`: the reader leaves early; no traceback, as with any Unix tool."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        f"'{sys.executable}' -m sweeper launch '{ROOT / 'sweeps' / 'cpu_grid24.yaml'}' --dry-run | head -c 10",
        shell=True, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )  # fmt: skip
    assert proc.stdout == "Sweep 'cpu"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "BrokenPipeError" not in proc.stderr


def test_random_sampling_is_seeded_and_in_range() -> None:
    raw = {**MINIMAL, "method": "random", "run_cap": 5, "seed": 3, "parameters": {
        "learning_rate": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-3},
        "gradient_accumulation_steps": {"distribution": "int_uniform", "min": 1, "max": 4},
        "per_device_train_batch_size": {"values": [2, 4]}}}  # fmt: skip
    first, again = expand(parse_spec(raw)), expand(parse_spec(raw))
    assert first == again
    assert len(first) == 5
    assert all(1e-6 <= c["learning_rate"] <= 1e-3 for c in first)
    assert all(isinstance(c["gradient_accumulation_steps"], int) for c in first)
    assert {c["per_device_train_batch_size"] for c in first} <= {2, 4}


def test_grid_run_cap_caps_the_grid() -> None:
    raw = {**MINIMAL, "run_cap": 2, "parameters": {"learning_rate": {"values": [1e-5, 2e-5, 3e-5]}}}
    assert len(expand(parse_spec(raw))) == 2


def test_swept_model_fields_land_in_their_section() -> None:
    spec = parse_spec({**MINIMAL, "parameters": {"quantization": {"values": ["4bit", "none"]},
                                                  "lora_r": {"values": [8, 16]}}})  # fmt: skip
    settings = resolve(spec, expand(spec)[-1])
    assert settings.model.quantization == "none"
    assert settings.model.lora.r == 16


def test_the_dry_run_reads_the_data_and_names_the_detected_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ROOT / "tests" / "fixtures" / "data" / "formats" / "conversational.jsonl"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: fmt\nmodel: {{name_or_path: builtin:tiny-mistral}}\ndata: {{path: '{data}'}}\n")
    assert main(["launch", str(spec), "--dry-run"]) == 0
    assert "  data: 3 rows: 3 valid; format conversational (detected)" in capsys.readouterr().out
    spec.write_text(
        f"name: fmt\nmodel: {{name_or_path: builtin:tiny-mistral}}\ndata: {{path: '{tmp_path}/no.jsonl'}}\n"
    )
    assert main(["launch", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ERROR: {tmp_path}/no.jsonl: no such file")
    assert not (tmp_path / "trials").exists()


def test_a_hub_dataset_is_not_downloaded_by_the_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", str(ROOT / "sweeps" / "lr_grid.yaml"), "--dry-run"]) == 0
    assert (
        "  data: Hub dataset Intel/orca_dpo_pairs (orca): read at launch, not by the dry run" in capsys.readouterr().out
    )


# --- the spec's edges -------------------------------------------------------------------------------

BASE = {"name": "t", "model": {"name_or_path": "builtin:tiny-mistral"}, "data": {"path": "builtin:synthetic"}}


def test_a_huge_grid_with_run_cap_builds_only_the_capped_configs() -> None:
    values = {"values": list(range(1, 1001))}
    spec = parse_spec(
        {**BASE, "run_cap": 4, "parameters": {"seed": values, "max_steps": values, "logging_steps": values}}
    )
    assert expand(spec) == [{"seed": 1, "max_steps": 1, "logging_steps": k} for k in (1, 2, 3, 4)]


def test_the_goal_is_inferred_from_the_metric_name_and_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_spec({**BASE, "metric": {"name": "loss"}}).metric.goal == "minimize"
    assert (
        parse_spec({**BASE, "metric": {"name": "eval_loss"}, "training": {"eval_steps": 2}}).metric.goal == "minimize"
    )
    assert parse_spec({**BASE, "metric": {"name": "rewards/accuracies"}}).metric.goal == "maximize"
    explicit = parse_spec({**BASE, "metric": {"name": "loss", "goal": "maximize"}}).metric
    assert explicit.goal == "maximize" and not explicit.goal_inferred
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nmetric: {name: loss}\nmodel: {name_or_path: builtin:tiny-mistral}\n"
                    "data: {path: builtin:synthetic}\n")  # fmt: skip
    assert main(["launch", str(spec), "--dry-run"]) == 0
    assert "metric loss (minimize, inferred from its name: set metric.goal to insist)" in capsys.readouterr().out


def test_a_custom_metric_is_allowed_when_declared() -> None:
    metric = parse_spec({**BASE, "metric": {"name": "my/score", "custom": True, "goal": "maximize"}}).metric
    assert metric.name == "my/score"
    with pytest.raises(SpecError, match="cannot tell whether to maximize or minimize 'my/score'"):
        parse_spec({**BASE, "metric": {"name": "my/score", "custom": True}})


def test_wandb_ranges_sample_floats_as_uniform_and_integers_as_int_uniform() -> None:
    spec = parse_spec({**BASE, "method": "random", "run_cap": 20, "seed": 3,
                       "parameters": {"weight_decay": {"min": 0.0, "max": 1.0},
                                      "gradient_accumulation_steps": {"min": 1, "max": 8}}})  # fmt: skip
    assert spec.parameters["weight_decay"].kind == "uniform"
    assert spec.parameters["gradient_accumulation_steps"].kind == "int_uniform"
    configs = expand(spec)
    assert len({c["weight_decay"] for c in configs}) == 20 and all(0 < c["weight_decay"] < 1 for c in configs)
    assert all(isinstance(c["gradient_accumulation_steps"], int) for c in configs)


def test_wandb_hyperband_s_and_strict_as_wandb_reads_them() -> None:
    from sweeper.plan import Budget, from_wandb

    budget = Budget(grid=4, min_total=400, max_total=400)
    config = parse_spec({**BASE, "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3,
                                                     "strict": False}}).early_terminate  # fmt: skip
    assert config is not None
    out = from_wandb(config.arguments, budget)
    assert out["min_resource"] == 3 * 4 and out["max_resource"] == 27 * 4  # W&B's smallest band: 27 / 3**2


def test_a_hyperband_that_can_never_prune_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nmodel: {name_or_path: builtin:tiny-mistral}\ndata: {path: builtin:synthetic}\n"
                    "training: {max_steps: 10, logging_steps: 2}\n"
                    "early_terminate: {type: hyperband, min_iter: 6}\n")  # fmt: skip
    assert main(["launch", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: early_terminate: hyperband's first rung comes after 6 logged results, but the longest trial " \
           "logs only 5: nothing can be pruned" in out  # fmt: skip


def test_an_unreadable_spec_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads any file: chmod 000 would not stop it
    assert main(["launch", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ERROR: {spec}: could not be read (Permission denied): check the path and its permissions"]


def test_no_beta_tip_when_beta_has_a_single_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nparameters: {beta: {value: 0.2}}\nmodel: {name_or_path: builtin:tiny-mistral}\n"
                    "data: {path: builtin:synthetic}\n")  # fmt: skip
    assert main(["launch", str(spec), "--dry-run"]) == 0
    assert "beta is swept" not in capsys.readouterr().out


def test_the_dry_run_gives_token_lengths_when_the_tokenizer_is_local(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["launch", str(ROOT / "sweeps" / "smoke.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "  tokens (of 256 rows, chat template applied): prompt p50 " in out
    assert "  max_length 96: 0 of 256 pairs dropped (the prompt alone fills it), 0 with an answer cut" in out
    assert "the memory prediction assumes every sequence at max_length 96 (the worst case" in out
    data = ROOT / "tests" / "fixtures" / "data" / "formats" / "alpaca.jsonl"
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: t\nmodel: {{name_or_path: sweeper-tests/not-cached}}\ndata: {{path: '{data}'}}\n")
    assert main(["launch", str(spec), "--dry-run"]) == 0
    assert (
        "  token lengths: the tokenizer of sweeper-tests/not-cached is not on this machine (nothing is downloaded "
        "by a dry run); the memory prediction assumes every sequence at max_length 1024"
    ) in capsys.readouterr().out


def test_the_pruner_reads_the_held_out_metric_when_trials_evaluate(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:  # fmt: skip
    from sweeper.plan import pruning_metric

    et = {"type": "optuna", "pruner": "peer"}
    assert pruning_metric(parse_spec({**BASE, "early_terminate": et})) == "rewards/margins"
    evaluating = parse_spec({**BASE, "early_terminate": et, "training": {"eval_steps": 4}})
    assert pruning_metric(evaluating) == "eval_rewards/margins"
    chosen = parse_spec({**BASE, "early_terminate": {**et, "metric": "rewards/margins"}, "training": {"eval_steps": 4}})
    assert pruning_metric(chosen) == "rewards/margins"  # early_terminate.metric insists
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nmodel: {name_or_path: builtin:tiny-mistral}\ndata: {path: builtin:synthetic}\n"
                    "early_terminate: {type: optuna, pruner: peer}\ntraining: {max_steps: 12}\n")  # fmt: skip
    assert main(["launch", str(spec), "--dry-run"]) == 0
    assert "tip: set training.eval_steps to prune on held-out eval_rewards/margins" in capsys.readouterr().out
    spec.write_text(spec.read_text().replace("max_steps: 12", "max_steps: 12, eval_steps: 4"))
    assert main(["launch", str(spec), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert (
        "sweeper peer (percentile 50), warm-up 10%, on_prune stop on eval_rewards/margins (held-out, every eval_steps)"
        in out
    )
    assert "held-out evaluation in training: 26 rows x 3 evaluation(s) per trial = 78 pairs scored" in out


def test_optuna_with_no_pruner_name_is_sweepers_default_rule() -> None:
    et = parse_spec({**BASE, "early_terminate": {"type": "optuna"}}).early_terminate
    assert et is not None and (et.pruner, et.arguments["percentile"], et.warmup_fraction) == ("peer", 25.0, 0.05)
    assert (et.on_prune, et.breadth_first) == ("pause", True)
    own = parse_spec({**BASE, "early_terminate": {"type": "optuna", "warmup_fraction": 0.2}}).early_terminate
    assert own is not None and own.warmup_fraction == 0.2 and own.breadth_first  # the spec's keys win
    stop = parse_spec({**BASE, "early_terminate": {"type": "optuna", "on_prune": "stop"}}).early_terminate
    assert stop is not None and (stop.on_prune, stop.breadth_first) == ("stop", False)
    # with early stopping too (a paused trial keeps its best checkpoint and its patience count: tests/train)
    stopping = parse_spec({**BASE, "early_terminate": {"type": "optuna"},
                           "training": {"eval_steps": 4, "early_stopping_patience": 2}}).early_terminate  # fmt: skip
    assert stopping is not None and (stopping.pruner, stopping.on_prune, stopping.breadth_first) == (
        "peer", "pause", True)  # fmt: skip
    named = parse_spec({**BASE, "early_terminate": {"type": "optuna", "pruner": "median"}}).early_terminate
    assert named is not None and (named.on_prune, named.breadth_first, named.warmup_fraction) == ("stop", False, 0.1)
