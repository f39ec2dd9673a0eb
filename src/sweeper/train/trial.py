"""One DPO (Q)LoRA trial: TRL ``DPOTrainer`` + PEFT LoRA + bitsandbytes, reporting every log step.

The only module (with ``sweeper.train.tiny`` and ``sweeper.train.prepare``) that imports torch, transformers, TRL
and PEFT. It knows nothing of Ray: the caller passes ``report(metrics, checkpoint_dir)``.
``run_with_oom_retries`` turns an out-of-memory error into data: the attempt is recorded, its memory freed,
and the trial reruns at half the per-device batch and twice the accumulation (the same effective batch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from sweeper.config.spec import TrainingSection
from sweeper.errors import first_line
from sweeper.plan import estimate
from sweeper.plan.settings import TrialSettings, effective_batch, halve
from sweeper.prune import guard
from sweeper.records.metrics import (
    ATTEMPT,
    BEST_METRIC,
    BEST_STEP,
    CUDA_MAX_ALLOCATED_MB,
    CUDA_MAX_RESERVED_MB,
    DEVICE,
    DONE,
    ELAPSED_S,
    EXAMPLES_SEEN,
    GPU_NAME,
    GRADIENT_ACCUMULATION_STEPS,
    GUARD,
    LOAD_S,
    N_TRAIN_ROWS,
    NVML_PEAK_USED_MB,
    OOM,
    PEAK_RSS_MB,
    PER_DEVICE_TRAIN_BATCH_SIZE,
    PREDICTED_PEAK_GB,
    REFERENCE,
    STEP,
    TOKENS_SEEN,
    TORCH_THREADS,
    TRAIN_S,
)
from sweeper.records.schema import AttemptRow
from sweeper.records.storage import write_record
from sweeper.train import memory, resume
from sweeper.train.hf import dpo_config, free_memory, load_model, lora_config, resolve_bf16, set_threads, use_cuda

Report = Callable[[dict[str, Any], str | None], None]
# What ends an attempt as out of memory: CUDA's allocator error, and Python's on CPU.
OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


class MemoryMeter:
    """Peak memory of this trial's process: CUDA allocated/reserved (reset at start), NVML device, RSS."""

    def __init__(self) -> None:
        self.cuda = use_cuda()
        self.nvml_peak: float | None = None
        memory.reset_peak_rss()  # this attempt's peak, also in a worker reused from an earlier trial
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def read(self) -> dict[str, float]:
        out = {PEAK_RSS_MB: round(memory.peak_rss_mb(), 1)}
        if self.cuda:
            out[CUDA_MAX_ALLOCATED_MB] = round(torch.cuda.max_memory_allocated() / memory.MIB, 1)
            out[CUDA_MAX_RESERVED_MB] = round(torch.cuda.max_memory_reserved() / memory.MIB, 1)
            used = memory.nvml_used_mb(torch.cuda.current_device())
            if used is not None:
                self.nvml_peak = max(self.nvml_peak or 0.0, used)
                out[NVML_PEAK_USED_MB] = round(self.nvml_peak, 1)
        return out


class ReportCallback(TrainerCallback):
    """Forwards every TRL log (train and eval) with examples/tokens seen, time and memory.

    ``checkpoints`` (the sweep pauses trials, ``early_terminate.on_prune: pause``): every log step also saves a
    full HF checkpoint (sweeper.train.resume) and each of its results is reported with it, so that the trial can
    be paused after any result and continue exactly from there."""

    def __init__(self, report: Report, examples_per_step: int, started: float, meter: MemoryMeter,
                 attempt: dict[str, Any] | None = None, beta: float | None = None,
                 checkpoints: bool = False) -> None:  # fmt: skip
        self.report = report
        self.beta = beta  # the trial's DPO beta, for the guard (rewards are beta x a log-ratio)
        self.examples_per_step = examples_per_step
        self.started = started
        self.meter = meter
        self.attempt = attempt or {}  # constant fields of this attempt (number, batch, predicted peak)
        self.last: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []  # the curve so far, for the margin-hacking guard
        self.step = 0  # the optimizer step running now (where an out-of-memory error struck)
        self.checkpoints = checkpoints
        self.held: list[dict[str, Any]] = []  # results of a step being checkpointed, reported with its checkpoint
        self.resumed: dict[str, Any] = {}  # after a resume: where it resumed, on every result (sweeper.train.resume)
        self.best_restored: str | None = None  # after a resume with early stopping: its best checkpoint's copy

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # resumed with early stopping: the Trainer dropped the best checkpoint's path of the process that paused
        # (gone); the copy restored from the checkpoint takes its place, for load_best_model_at_end
        if self.best_restored is not None and state.best_global_step and state.best_model_checkpoint is None:
            state.best_model_checkpoint = self.best_restored

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step = state.global_step + 1

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # DefaultFlowCallback (first in the list) has decided whether this step logs or evaluates; the last step
        # needs no checkpoint (its adapter is the final result's)
        logs = control.should_log or control.should_evaluate
        if self.checkpoints and logs and state.global_step < state.max_steps:
            control.should_save = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or "train_runtime" in logs:  # the end-of-training summary is reported as the final result
            return
        metrics = {k: v for k, v in logs.items() if isinstance(v, int | float)}
        metrics.update(self.progress(state.global_step))
        if "num_tokens" in logs:
            metrics[TOKENS_SEEN] = int(logs["num_tokens"])
        self.rows.append(metrics)
        metrics[GUARD] = guard.verdict(self.rows, self.beta)
        # the latest value of every metric: an eval log carries no train metric (and a train log no eval_ one)
        self.last = {**self.last, **metrics}
        if control is not None and control.should_save and self.checkpoints:
            self.held.append(metrics)  # reported by on_save, with the checkpoint of this step
            return
        self.report(metrics, None)

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not self.checkpoints:
            return
        checkpoint = resume.finish_checkpoint(args.output_dir, state.global_step, self.elapsed(),
                                              best=state.best_model_checkpoint)  # fmt: skip
        held, self.held = self.held, []
        for metrics in held:  # each result with it: the sweep may pause after any of them
            self.report(metrics, checkpoint)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def progress(self, step: int) -> dict[str, Any]:
        return {
            STEP: step,
            EXAMPLES_SEEN: step * self.examples_per_step,
            ELAPSED_S: self.elapsed(),
            **self.meter.read(),
            **self.attempt,
            **self.resumed,
        }


class InjectOOM(TrainerCallback):
    """TEST ONLY: raises torch.OutOfMemoryError at the end of optimizer step ``step`` (see oom_injection)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected at step {self.step} by {TEST_OOM_AT_STEP})")


# TEST ONLY (tests/train/test_oom.py): SWEEPER_TEST_OOM_AT_STEP=N makes every attempt whose per-device batch is above
# SWEEPER_TEST_OOM_ABOVE_BATCH (default 1) raise torch.OutOfMemoryError at step N. Never set in real sweeps.
TEST_OOM_AT_STEP = "SWEEPER_TEST_OOM_AT_STEP"
TEST_OOM_ABOVE_BATCH = "SWEEPER_TEST_OOM_ABOVE_BATCH"
CallbacksFor = Callable[[TrainingSection], list[Any]]


def oom_injection(environ: Mapping[str, str]) -> CallbacksFor | None:
    """TEST ONLY: the callbacks that inject an OOM into an attempt, from the environment; None when unset."""
    if not environ.get(TEST_OOM_AT_STEP):
        return None
    step, above = int(environ[TEST_OOM_AT_STEP]), int(environ.get(TEST_OOM_ABOVE_BATCH, "1"))
    return lambda training: [InjectOOM(step)] if training.per_device_train_batch_size > above else []


@dataclass(frozen=True)
class TrialJob:
    """What one trial trains: its settings and rows, its CPU share, and the sweep's reference log-probs (``model.
    reference: shared``; sweeper.train.reference.compute_reference_logps), which replace the reference forward."""

    settings: TrialSettings
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] = field(default_factory=list)
    cpus: float = 1
    ref_logps: dict[str, Any] | None = None
    # the sweep may pause the trial (early_terminate.on_prune: pause): a full Trainer checkpoint at every log step
    pausable: bool = False

    def with_training(self, training: TrainingSection) -> TrialJob:
        return dataclasses.replace(self, settings=self.settings.with_training(training))


@dataclass
class Loaded:
    """One attempt's models and rows, ready for the trainer."""

    tokenizer: Any
    base: Any
    ref_model: Any  # the separate reference copy, else None (the base with the adapter disabled)
    bf16: bool
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    seconds: float


def load(job: TrialJob) -> Loaded:
    """The base (and, for ``reference: separate``, a second copy in the same quantization and dtype), and the rows
    with the shared reference log-probs attached for ``reference: shared``."""
    started = time.monotonic()
    model, bf16 = job.settings.model, resolve_bf16(job.settings.training)
    tokenizer, base = load_model(model, bf16)
    ref_model = load_model(model, bf16)[1] if model.reference == "separate" else None
    train_rows, eval_rows = job.train_rows, job.eval_rows
    if model.reference == "shared":
        train_rows, eval_rows = shared_rows(job.ref_logps, train_rows, eval_rows, bf16)
    return Loaded(tokenizer, base, ref_model, bf16, train_rows, eval_rows, time.monotonic() - started)


def attempt_fields(settings: TrialSettings, attempt: int) -> dict[str, Any]:
    """What every result of this attempt carries: its number, batch and accumulation, the predicted GPU peak."""
    training = settings.training
    fields: dict[str, Any] = {ATTEMPT: attempt, PER_DEVICE_TRAIN_BATCH_SIZE: training.per_device_train_batch_size,
                              GRADIENT_ACCUMULATION_STEPS: training.gradient_accumulation_steps}  # fmt: skip
    predicted = estimate.predict_settings(settings)  # for one GPU, also reported on CPU (what a user compares)
    if predicted is not None:
        fields[PREDICTED_PEAK_GB] = round(predicted, 2)
    return fields


def make_trainer(job: TrialJob, loaded: Loaded, work: str, callbacks: list[Any]) -> Any:
    from datasets import Dataset
    from trl import DPOTrainer

    training = job.settings.training
    evaluate = bool(loaded.eval_rows) and training.eval_steps is not None
    trainer = DPOTrainer(
        model=loaded.base,
        ref_model=loaded.ref_model,  # None: with peft_config the reference is the base with the adapter disabled
        args=dpo_config(training, job.settings.data, work, loaded.bf16, bool(loaded.eval_rows)),
        train_dataset=Dataset.from_list(loaded.train_rows),
        eval_dataset=Dataset.from_list(loaded.eval_rows) if evaluate else None,
        processing_class=loaded.tokenizer,
        peft_config=lora_config(job.settings.model),
        callbacks=callbacks,
    )
    from transformers.trainer_callback import EarlyStoppingCallback, PrinterCallback

    trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints every log dict: our callback reports them
    if evaluate and training.early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(training.early_stopping_patience, training.early_stopping_threshold))
    if job.settings.model.reference == "shared":
        from sweeper.train.reference import use_shared

        use_shared(trainer)  # read the precomputed columns: no reference forward in this trial
    return trainer


def run_trial(job: TrialJob, report: Report, callbacks: list[Any] | None = None, attempt: int = 1,
              probe: dict[str, Any] | None = None, resume_from: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Train one DPO trial; report every log step, then a final result with the adapter as checkpoint.

    ``probe`` (filled as it goes) lets the caller see the step and the model of an attempt that raised.
    ``resume_from``: a checkpoint this trial reported earlier (it was paused): training continues from there
    (HF's ``resume_from_checkpoint``), its clock from the elapsed time saved with it.
    """
    started = time.monotonic()
    threads = set_threads(job.cpus)
    meter = MemoryMeter()
    probe = probe if probe is not None else {}
    loaded = load(job)
    probe["model"] = weakref.ref(loaded.base)
    fields = attempt_fields(job.settings, attempt)
    forward = ReportCallback(report, job.settings.effective_batch, started, meter, fields, job.settings.training.beta,
                             checkpoints=job.pausable)  # fmt: skip
    if resume_from is not None:
        progress = resume.restored_progress(resume_from)
        forward.started -= progress["elapsed_s"]
        forward.rows = list(progress["logs"])
        forward.resumed = resume.resume_fields(progress)
    probe["forward"] = forward
    with tempfile.TemporaryDirectory(prefix="sweeper-trial-") as work:
        if resume_from is not None:
            forward.best_restored = resume.restore_best(resume_from, work)
        trainer = make_trainer(job, loaded, work, [forward, *(callbacks or [])])
        with resume.adapter_dtype_kept(trainer.model) if resume_from else contextlib.nullcontext():
            output = trainer.train(resume_from_checkpoint=resume_from)
        adapter_dir = Path(work) / "adapter"
        trainer.save_model(str(adapter_dir))
        final = {
            **forward.last,
            **forward.progress(trainer.state.global_step),
            DONE: 1,
            LOAD_S: round(loaded.seconds, 3),
            TRAIN_S: round(float(output.metrics.get("train_runtime", 0.0)), 3),
            TORCH_THREADS: threads,
            N_TRAIN_ROWS: len(loaded.train_rows),
            DEVICE: "cuda" if use_cuda() else "cpu",
            REFERENCE: job.settings.model.reference,
        }
        if trainer.state.best_global_step:  # early stopping: where the kept (best) checkpoint was taken
            final[BEST_STEP] = int(trainer.state.best_global_step)
            final[BEST_METRIC] = float(trainer.state.best_metric)
        if use_cuda():
            final[GPU_NAME] = torch.cuda.get_device_name()
        report(final, str(adapter_dir))
    del trainer, loaded
    free_memory()
    return final


def shared_rows(ref_logps: dict[str, Any] | None, train_rows: list[dict[str, str]], eval_rows: list[dict[str, str]],
                bf16: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """The rows with the sweep's shared reference log-probs as TRL's columns, after checking they fit this trial."""
    from sweeper.train.reference import attach

    if ref_logps is None:
        raise RuntimeError("model.reference: shared, but no shared reference log-probs reached this trial")
    dtype, device = "bf16" if bf16 else "fp32", "cuda" if use_cuda() else "cpu"
    if (ref_logps.get("dtype"), ref_logps.get("device")) != (dtype, device):
        raise RuntimeError(f"shared reference log-probs were computed in {ref_logps.get('dtype')} on "
                           f"{ref_logps.get('device')}, this trial runs {dtype} on {device}: set training.bf16 "
                           "explicitly, or use model.reference: adapter")  # fmt: skip
    return attach(train_rows, ref_logps["train"]), attach(eval_rows, ref_logps["eval"])


def run_with_oom_retries(job: TrialJob, report: Report, oom: str = "retry_halved", attempts_path: str | None = None,
                         callbacks_for: CallbacksFor | None = None,
                         resume_from: str | None = None) -> dict[str, Any]:  # fmt: skip
    """run_trial, where out of memory is data: each OOM attempt is recorded (``attempts_path``, a path or a
    storage URI, written when any attempt ran out of memory), its memory freed, and with
    ``oom="retry_halved"`` the trial reruns at half the per-device batch and twice the accumulation, down to
    batch 1. When no attempt fits, a final result with ``sweeper/oom: 1`` (and no ``sweeper/done``) is reported
    and returned: the trial ends, the sweep goes on. ``resume_from`` (a paused trial's checkpoint) applies to the
    first attempt only: a retry at another batch starts from scratch.
    """
    attempts: list[dict[str, Any]] = []
    for number in itertools.count(1):  # halving reaches batch 1 after log2(batch) attempts
        training = job.settings.training
        probe: dict[str, Any] = {}
        extra = callbacks_for(training) if callbacks_for else []
        try:
            final = run_trial(job, report, extra, attempt=number, probe=probe,
                              resume_from=resume_from if number == 1 else None)  # fmt: skip
        except OOM_ERRORS as exc:
            error = f"{type(exc).__name__}: {first_line(exc, 300)}"
        else:
            if attempts:
                attempts.append(attempt_row(number, training, "completed", final.get(STEP), None))
                _write(attempts_path, attempts)
            return final
        last, row = out_of_memory(probe, attempt_row(number, training, "oom", 0, error))
        attempts.append(row)
        _write(attempts_path, attempts)
        smaller = halve(training) if oom == "retry_halved" else None
        if smaller is None:
            final = {**last, OOM: 1, ATTEMPT: number, DEVICE: "cuda" if use_cuda() else "cpu"}
            report(final, None)
            return final
        job = job.with_training(smaller)


def out_of_memory(probe: dict[str, Any], row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """After an attempt ran out of memory: free what it left, and return its last progress and its attempt row
    (the step it reached, and whether nothing of it is left alive)."""
    forward = probe.pop("forward", None)
    last = {**forward.last, **forward.progress(forward.step)} if forward is not None else {}
    step = forward.step if forward is not None else 0
    del forward
    free_memory()
    model = probe.get("model")
    return last, {**row, "step": step, "freed": model is None or model() is None}


def attempt_row(number: int, training: TrainingSection, status: str, step: Any, error: str | None) -> AttemptRow:
    return {
        "attempt": number,
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "effective_batch": effective_batch(training),
        "status": status,
        "step": step,
        "error": error,
    }


def _write(location: str | None, attempts: list[dict[str, Any]]) -> None:
    if location is not None:
        write_record(location, attempts)
