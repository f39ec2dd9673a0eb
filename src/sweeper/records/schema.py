"""The shapes of sweeper's record files, shared by the code that writes them and the code that reads them.

Each file under trials/<name>/ is JSON; these TypedDicts are its schema (the writers return them, the readers'
fields are typed with them), so a field added on one side is seen on the other. Every field is optional to a
reader: records of older releases lack the newer ones. Light module: typing only.
"""

from __future__ import annotations

from typing import Any, TypedDict


class SweepMeta(TypedDict, total=False):
    """sweep.json: the launch (run/launch.py writes, records/store.py reads)."""

    name: str
    spec_path: str
    spec_hash: str
    spec_text: str
    spec: dict[str, Any]  # the validated spec, every default filled in (Spec.model_dump(mode="json"))
    metric: dict[str, Any]  # {"name", "goal"}
    swept: list[str]
    n_planned: int
    n_skipped: int  # configs left out by the preflight (infeasible.json)
    data: dict[str, Any]  # the data step's summary: rows, n_train, n_test, system_turn, tokens_per_example
    versions: dict[str, str]
    git_commit: str | None
    host: dict[str, Any]  # hardware, python, ray: {address, resources, gpus_per_trial}
    started_at: str
    finished_at: str | None
    wall_s: float
    phases: list[list[Any]]  # [[phase, seconds], ...] in order: data, Ray start, shared references, trials, ...
    resumed: list[dict[str, Any]]  # one entry per `sweeper resume`: at, address, trials_before, wall_s


class TrialSettingsRecord(TypedDict):
    """<trial>/settings.json: the trial's resolved settings (plan.TrialSettings.as_dict)."""

    model: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]


class PrunedRecord(TypedDict):
    """<trial>/pruned.json: where the pruning scheduler stopped the trial (prune/decide.py)."""

    step: int | None
    examples_seen: int
    tokens_seen: int | None
    value: Any
    reason: str
    planned_examples: int
    saved_examples: int
    saved_s: float | None


class AttemptRow(TypedDict, total=False):
    """One entry of <trial>/attempts.json: an attempt of a trial that ran out of memory at least once."""

    attempt: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    effective_batch: int
    status: str  # "oom" | "completed"
    step: int | None
    error: str | None
    freed: bool  # nothing of the out-of-memory attempt was left alive


class InfeasibleRow(TypedDict, total=False):
    """One entry of trials/<name>/infeasible.json: a config left out before it ran, or that never fit."""

    params: dict[str, Any]
    reason: str  # "preflight" | "oom"
    predicted_gb: float | None
    gpu_memory_gb: float
    trial_id: str
    batches_tried: list[int]


class EvaluationRecord(TypedDict, total=False):
    """<trial>/evaluation.json and each entry of evaluation_base.json: the held-out evaluation (run/evalrun.py)."""

    key: str
    status: str  # "evaluated" | "skipped" | "error"
    reason: str | None
    preference: dict[str, Any]  # records/heldout.preference_metrics
    generation: dict[str, Any]  # records/heldout.generation_metrics
    multiple_choice: dict[str, dict[str, Any]]  # set label -> records/heldout.choice_metrics
    samples: list[dict[str, Any]]  # {"prompt", "answer", "n_tokens"}
    seconds: float
    load_s: float
    device: str
    torch_threads: int
    base: str | None  # the label of the base it was compared with (trials)
    label: str  # (bases) "base", or "base (<quantization>)" when trials used several
    model: dict[str, Any]  # (bases) the model section evaluated
