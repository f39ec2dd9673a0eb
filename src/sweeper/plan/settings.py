"""One trial's resolved settings: the spec's model, data and training sections with the trial's parameters applied.

``resolve(spec, params)`` is the one place a parameter lands in its section (``lora_r`` in ``model.lora.r``,
``max_length`` in ``data``, every other name in ``training``); the result is typed and frozen, and travels as it
is to the trial, the reference precompute, the memory estimate and the records. Light module: no torch, no ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sweeper.config.spec import MODEL_PARAMETERS, DataSection, ModelSection, Spec, TrainingSection


@dataclass(frozen=True)
class TrialSettings:
    """What one trial trains with: every field validated by the spec's schema, nothing left to look up."""

    model: ModelSection
    data: DataSection
    training: TrainingSection

    @property
    def effective_batch(self) -> int:
        return effective_batch(self.training)

    def with_training(self, training: TrainingSection) -> TrialSettings:
        return TrialSettings(self.model, self.data, training)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON in records, the reference cache's key)."""
        return {"model": self.model.model_dump(), "data": self.data.model_dump(),
                "training": self.training.model_dump()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSettings:
        return cls(ModelSection.model_validate(data["model"]), DataSection.model_validate(data["data"]),
                   TrainingSection.model_validate(data["training"]))  # fmt: skip


def resolve(spec: Spec, params: Mapping[str, Any]) -> TrialSettings:
    """The settings of the trial with these swept values (each already validated for its field by the spec)."""
    sections: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "training": {}}
    lora: dict[str, Any] = {}
    for name, value in params.items():
        path = MODEL_PARAMETERS.get(name, ("training", name))
        if path[:2] == ("model", "lora"):
            lora[path[2]] = value
        else:
            sections[path[0]][path[-1]] = value
    if lora:
        sections["model"]["lora"] = spec.model.lora.model_copy(update=lora)
    return TrialSettings(
        model=spec.model.model_copy(update=sections["model"]),
        data=spec.data.model_copy(update=sections["data"]),
        training=spec.training.model_copy(update=sections["training"]),
    )


def effective_batch(training: TrainingSection, devices: int = 1) -> int:
    """Examples per optimizer step: per-device batch x accumulation x devices."""
    return training.per_device_train_batch_size * training.gradient_accumulation_steps * devices


def halve(training: TrainingSection) -> TrainingSection | None:
    """The next OOM retry: a smaller per-device batch and more accumulation, same effective batch.

    Half the batch when it is even, else its largest divisor below it (3 -> 1 x 3); None at batch 1.
    """
    batch = training.per_device_train_batch_size
    smaller = next((d for d in range(batch // 2, 0, -1) if batch % d == 0), None)
    if smaller is None:
        return None
    factor = batch // smaller
    accumulation = training.gradient_accumulation_steps * factor
    return training.model_copy(
        update={"per_device_train_batch_size": smaller, "gradient_accumulation_steps": accumulation}
    )


def planned_examples(training: TrainingSection, n_train: int) -> int:
    """Examples a trial sees if it runs to the end (the Trainer drops no partial last batch)."""
    per_step = effective_batch(training)
    if training.max_steps > 0:
        return training.max_steps * per_step
    batches = math.ceil(n_train / training.per_device_train_batch_size)
    steps_per_epoch = max(1, math.ceil(batches / training.gradient_accumulation_steps))
    return int(math.ceil(float(training.num_train_epochs) * steps_per_epoch)) * per_step


def report_interval(training: TrainingSection) -> int:
    """Examples between two logged results of a trial."""
    return effective_batch(training) * training.logging_steps


def recorded_settings(spec: Spec, trial: Any) -> TrialSettings:
    """A recorded trial's settings: as the trial recorded them (``settings.json``), else (records of releases
    before it was written) resolved from the sweep's spec and the trial's params."""
    recorded = getattr(trial, "settings", None)
    return TrialSettings.from_dict(recorded) if recorded else resolve(spec, trial.params)
