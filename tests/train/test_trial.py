"""One real DPO QLoRA trial on CPU: 4-bit base layers, LoRA on top, every log step reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

import bitsandbytes as bnb  # noqa: E402
from peft.tuners.lora.bnb import Linear4bit as LoraLinear4bit  # noqa: E402
from transformers import AutoTokenizer, TrainerCallback  # noqa: E402

from sweeper.config.spec import parse_spec  # noqa: E402
from sweeper.data.rows import format_rows, make_prompt_renderer, validate_rows  # noqa: E402
from sweeper.data.synthetic import synthetic_preference_rows  # noqa: E402
from sweeper.plan import resolve  # noqa: E402
from sweeper.train.tiny import ensure_tiny_model  # noqa: E402
from sweeper.train.trial import TrialJob, run_trial  # noqa: E402

pytestmark = pytest.mark.slow


class LayerTypes(TrainerCallback):
    """Records the model's layer types when training starts."""

    def __init__(self) -> None:
        self.types: set[type] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.types = {type(m) for m in model.modules()}


def rows(n: int) -> list[dict[str, str]]:
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    valid, _ = validate_rows(synthetic_preference_rows(n), "orca")
    return format_rows(valid, "orca", make_prompt_renderer(tokenizer))


def test_4bit_trial_on_cpu(tmp_path: Path) -> None:
    spec = parse_spec({
        "name": "t", "model": {"name_or_path": "builtin:tiny-mistral", "quantization": "4bit",
                               "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
        "data": {"path": "builtin:synthetic", "max_length": 96},
        "training": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 4,
                     "learning_rate": 3e-3, "logging_steps": 1},
    })  # fmt: skip
    reports: list[tuple[dict[str, Any], bool]] = []

    def report(metrics: dict[str, Any], checkpoint: str | None) -> None:
        has_adapter = checkpoint is not None and (Path(checkpoint) / "adapter_config.json").is_file()
        reports.append((metrics, has_adapter))

    layers = LayerTypes()
    final = run_trial(TrialJob(resolve(spec, {}), rows(32)), report, callbacks=[layers])

    assert bnb.nn.Linear4bit in layers.types  # the base really is 4-bit nf4
    assert LoraLinear4bit in layers.types  # LoRA sits on the 4-bit layers
    steps = [m for m, _ in reports[:-1]]
    assert [m["sweeper/step"] for m in steps] == [1, 2, 3, 4]
    assert [m["sweeper/examples_seen"] for m in steps] == [4, 8, 12, 16]  # 2 per device x 2 accumulation
    assert all("rewards/margins" in m and "rewards/accuracies" in m for m in steps)
    assert steps[0]["rewards/margins"] == 0.0  # policy == reference before the first update
    assert all(m["sweeper/peak_rss_mb"] > 50 for m in steps)
    assert all(m["sweeper/tokens_seen"] > 0 for m in steps)
    assert reports[-1][1]  # the final result carries the saved adapter
    assert final["sweeper/done"] == 1 and final["sweeper/torch_threads"] == 1


def test_the_final_result_keeps_the_last_train_metric_when_an_evaluation_came_last() -> None:
    from sweeper.train.trial import MemoryMeter, ReportCallback

    class State:
        global_step = 4

    sent: list[dict] = []
    forward = ReportCallback(lambda m, c: sent.append(m), 8, 0.0, MemoryMeter())
    forward.on_log(None, State(), None, logs={"loss": 0.6, "rewards/margins": 0.4})
    forward.on_log(None, State(), None, logs={"eval_loss": 0.65, "eval_rewards/margins": 0.3})
    assert "rewards/margins" not in sent[-1]  # the eval result itself is as TRL logged it
    assert forward.last["rewards/margins"] == 0.4 and forward.last["eval_rewards/margins"] == 0.3


def test_early_stopping_ends_a_trial_that_stops_improving_and_keeps_its_best_checkpoint() -> None:
    # greater_is_better: false on eval margins that rise: every evaluation after the first is "worse", so with
    # patience 2 the trial must end at the third evaluation and keep the checkpoint of the first
    spec = parse_spec({
        "name": "t", "model": {"name_or_path": "builtin:tiny-mistral", "quantization": "none",
                               "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
        "data": {"path": "builtin:synthetic", "max_length": 96},
        "training": {"per_device_train_batch_size": 4, "max_steps": 40, "learning_rate": 3e-3, "logging_steps": 1,
                     "eval_steps": 2, "warmup_steps": 0, "early_stopping_patience": 2,
                     "greater_is_better": False},
    })  # fmt: skip
    data = rows(48)
    reports: list[dict[str, Any]] = []
    final = run_trial(TrialJob(resolve(spec, {}), data[:40], data[40:]), lambda m, c: reports.append(m))
    evals = [m for m in reports if "eval_rewards/margins" in m and "sweeper/done" not in m]
    assert [m["sweeper/step"] for m in evals] == [2, 4, 6]
    assert evals[0]["eval_rewards/margins"] < evals[1]["eval_rewards/margins"] < evals[2]["eval_rewards/margins"]
    assert final["sweeper/step"] == 6 < 40  # ended early
    assert final["sweeper/best_step"] == 2 and final["sweeper/best_metric"] == evals[0]["eval_rewards/margins"]
