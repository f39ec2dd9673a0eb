"""What the benchmarks share: the rendered smoke rows, a trial's settings per reference mode, medians."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from plain_trl import CONFIG  # noqa: E402

# --real: the builtin pretrained SmolLM2-135M-Instruct on the shipped orca rows instead of the tiny model
REAL_MODEL = {"name_or_path": "builtin:smollm2-135m-instruct"}
REAL_DATA = {"path": "builtin:orca_dpo_pairs", "max_length": 128, "test_size": 24}
REAL_CONFIG = {"per_device_train_batch_size": 2, "max_length": 128, "learning_rate": 1e-4, "max_steps": 4,
               "logging_steps": 1}  # fmt: skip
REAL = {"on": False}


def use_real() -> None:
    """Switch every benchmark helper to the real model and rows (CONFIG is updated in place)."""
    REAL["on"] = True
    CONFIG.update(REAL_CONFIG)


def model_path() -> str:
    from sweeper.train.models import resolve_model

    return resolve_model(REAL_MODEL["name_or_path"] if REAL["on"] else "builtin:tiny-mistral")


def smoke_spec(**model: Any) -> Any:
    """sweeps/smoke.yaml with the benchmark's CONFIG (one trial's worth) and the given model fields
    (with --real: the builtin SmolLM2 model and the shipped orca rows)."""
    from sweeper.config.spec import load_spec

    spec = load_spec(ROOT / "sweeps" / "smoke.yaml")
    lora = CONFIG["lora"]
    if REAL["on"]:
        model = {**REAL_MODEL, **model}
        spec = spec.model_copy(update={"data": spec.data.model_copy(update=REAL_DATA)})
    return spec.model_copy(update={
        "parameters": {},
        "model": spec.model.model_copy(update={**model, "lora": spec.model.lora.model_copy(update=lora)}),
        "training": spec.training.model_copy(update={
            "per_device_train_batch_size": CONFIG["per_device_train_batch_size"], "max_steps": CONFIG["max_steps"],
            "learning_rate": CONFIG["learning_rate"], "logging_steps": CONFIG["logging_steps"]}),
    })  # fmt: skip


def one_trial(
    model: dict[str, Any], data: dict[str, Any], training: dict[str, Any], lora: dict[str, Any] | None = None
) -> Any:
    """The TrialSettings of sweeps/smoke.yaml with these fields replaced and nothing swept (the memory benchmarks'
    single trial)."""
    from sweeper.config.spec import load_spec
    from sweeper.plan import resolve

    spec = load_spec(ROOT / "sweeps" / "smoke.yaml")
    if lora:
        model = {**model, "lora": spec.model.lora.model_copy(update=lora)}
    return resolve(spec.model_copy(update={
        "parameters": {},
        "model": spec.model.model_copy(update=model),
        "data": spec.data.model_copy(update=data),
        "training": spec.training.model_copy(update=training),
    }), {})  # fmt: skip


LONG_TEXT = "Rest, drink water, and see a doctor if the fever lasts more than three days or climbs above 39 C. "


def long_rows(n: int, repeats: int) -> list[dict[str, str]]:
    """n preference rows whose chosen and rejected answers (LONG_TEXT x repeats) outrun any max_length: every
    sequence is truncated to it, the memory estimate's worst case."""
    text = LONG_TEXT * repeats
    return [{"prompt": "What should I do about a fever?", "chosen": " Yes. " + text, "rejected": " No. " + text}
            for _ in range(n)]  # fmt: skip


def rows() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The smoke sweep's rendered train and held-out rows, exactly as launch prepares them."""
    from sweeper.train.prepare import prepare_data

    prepared = prepare_data(smoke_spec())
    if REAL["on"]:  # the shared precompute covers every train row: keep it to what a short benchmark trains on
        return prepared.train[:64], prepared.test
    return prepared.train, prepared.test


def settings(reference: str, quantization: str = "4bit", accumulation: int = 1, **model: Any) -> Any:
    from sweeper.plan import resolve

    spec = smoke_spec(reference=reference, quantization=quantization, **model)
    return resolve(spec, {"gradient_accumulation_steps": accumulation})


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float]) -> str:
    return f"median {median(values):.3f} (n={len(values)}: {', '.join(f'{v:.3f}' for v in values)})"
