"""One DPO (Q)LoRA trial: TRL ``DPOTrainer`` + PEFT LoRA + bitsandbytes, reporting every log step.

The only module (with ``sweeper.train.tiny`` and ``sweeper.train.prepare``) that imports torch, transformers, TRL
and PEFT. It knows nothing of Ray: the caller passes ``report(metrics, checkpoint_dir)``.
``run_with_oom_retries`` turns an out-of-memory error into data: the attempt is recorded, its memory freed,
and the trial reruns at half the per-device batch and twice the accumulation (the same effective batch).
"""

from __future__ import annotations

import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from sweeper.plan import estimate
from sweeper.plan.space import effective_batch, halve
from sweeper.prune import guard
from sweeper.records.storage import write_record
from sweeper.train import memory
from sweeper.train.hf import dpo_config, free_memory, load_model, lora_config, resolve_bf16, set_threads, use_cuda

# Our own metrics carry this prefix so they never collide with TRL's.
PREFIX = "sweeper/"
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
        out = {f"{PREFIX}peak_rss_mb": round(memory.peak_rss_mb(), 1)}
        if self.cuda:
            out[f"{PREFIX}cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / memory.MIB, 1)
            out[f"{PREFIX}cuda_max_reserved_mb"] = round(torch.cuda.max_memory_reserved() / memory.MIB, 1)
            used = memory.nvml_used_mb(torch.cuda.current_device())
            if used is not None:
                self.nvml_peak = max(self.nvml_peak or 0.0, used)
                out[f"{PREFIX}nvml_peak_used_mb"] = round(self.nvml_peak, 1)
        return out


class ReportCallback(TrainerCallback):
    """Forwards every TRL log (train and eval) with examples/tokens seen, time and memory."""

    def __init__(self, report: Report, examples_per_step: int, started: float, meter: MemoryMeter,
                 attempt: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.report = report
        self.examples_per_step = examples_per_step
        self.started = started
        self.meter = meter
        self.attempt = attempt or {}  # constant fields of this attempt (number, batch, predicted peak)
        self.last: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []  # the curve so far, for the margin-hacking guard
        self.step = 0  # the optimizer step running now (where an out-of-memory error struck)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.step = state.global_step + 1

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or "train_runtime" in logs:  # the end-of-training summary is reported as the final result
            return
        metrics = {k: v for k, v in logs.items() if isinstance(v, int | float)}
        metrics.update(self.progress(state.global_step))
        if "num_tokens" in logs:
            metrics[f"{PREFIX}tokens_seen"] = int(logs["num_tokens"])
        self.rows.append(metrics)
        metrics[f"{PREFIX}guard"] = guard.verdict(self.rows)
        self.last = metrics
        self.report(metrics, None)

    def progress(self, step: int) -> dict[str, Any]:
        return {
            f"{PREFIX}step": step,
            f"{PREFIX}examples_seen": step * self.examples_per_step,
            f"{PREFIX}elapsed_s": round(time.monotonic() - self.started, 3),
            **self.meter.read(),
            **self.attempt,
        }


class InjectOOM(TrainerCallback):
    """TEST ONLY: raises torch.OutOfMemoryError at the end of optimizer step ``step`` (see oom_injection)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected at step {self.step} by {TEST_OOM_AT_STEP})")


# TEST ONLY (tests/test_oom.py): SWEEPER_TEST_OOM_AT_STEP=N makes every attempt whose per-device batch is above
# SWEEPER_TEST_OOM_ABOVE_BATCH (default 1) raise torch.OutOfMemoryError at step N. Never set in real sweeps.
TEST_OOM_AT_STEP = "SWEEPER_TEST_OOM_AT_STEP"
TEST_OOM_ABOVE_BATCH = "SWEEPER_TEST_OOM_ABOVE_BATCH"
CallbacksFor = Callable[[dict[str, Any]], list[Any]]


def oom_injection(environ: Mapping[str, str]) -> CallbacksFor | None:
    """TEST ONLY: the callbacks that inject an OOM into an attempt, from the environment; None when unset."""
    if not environ.get(TEST_OOM_AT_STEP):
        return None
    step, above = int(environ[TEST_OOM_AT_STEP]), int(environ.get(TEST_OOM_ABOVE_BATCH, "1"))
    return lambda training: [InjectOOM(step)] if training["per_device_train_batch_size"] > above else []


def run_trial(
    settings: dict[str, Any],
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
    report: Report,
    cpus: float = 1,
    callbacks: list[Any] | None = None,
    attempt: int = 1,
    probe: dict[str, Any] | None = None,
    ref_logps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one DPO trial; report every log step, then a final result with the adapter as checkpoint.

    ``probe`` (filled as it goes) lets the caller see the step and the model of an attempt that raised.
    ``ref_logps`` (sweeper.train.reference.compute_reference_logps, for ``model.reference: shared``) replaces the
    reference forward passes.
    """
    from datasets import Dataset
    from trl import DPOTrainer

    started = time.monotonic()
    threads = set_threads(cpus)
    meter = MemoryMeter()
    training, data, model_s = settings["training"], settings["data"], settings["model"]
    bf16 = resolve_bf16(training)
    probe = probe if probe is not None else {}
    tokenizer, base = load_model(model_s, bf16)
    reference = model_s.get("reference", "adapter")
    # separate: a second copy of the base (same quantization and dtype); adapter/shared: the adapter disabled
    ref_model = load_model(model_s, bf16)[1] if reference == "separate" else None
    if reference == "shared":
        train_rows, eval_rows = shared_rows(ref_logps, train_rows, eval_rows, bf16)
    probe["model"] = weakref.ref(base)
    load_s = time.monotonic() - started
    examples_per_step = effective_batch(training)
    fields = {f"{PREFIX}attempt": attempt,
              f"{PREFIX}per_device_train_batch_size": training["per_device_train_batch_size"],
              f"{PREFIX}gradient_accumulation_steps": training["gradient_accumulation_steps"]}  # fmt: skip
    predicted = estimate.predict_settings(settings)  # for one GPU, also reported on CPU (what a user compares)
    if predicted is not None:
        fields[f"{PREFIX}predicted_peak_gb"] = round(predicted, 2)
    forward = ReportCallback(report, examples_per_step, started, meter, fields)
    probe["forward"] = forward
    with tempfile.TemporaryDirectory(prefix="sweeper-trial-") as work:
        trainer = DPOTrainer(
            model=base,
            ref_model=ref_model,  # None: with peft_config the reference is the base with the adapter disabled
            args=dpo_config(training, data, work, bf16, bool(eval_rows)),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(eval_rows) if eval_rows and training["eval_steps"] else None,
            processing_class=tokenizer,
            peft_config=lora_config(model_s),
            callbacks=[forward, *(callbacks or [])],
        )
        if reference == "shared":
            from sweeper.train.reference import use_shared

            use_shared(trainer)  # read the precomputed columns: no reference forward in this trial
        output = trainer.train()
        adapter_dir = Path(work) / "adapter"
        trainer.save_model(str(adapter_dir))
        final = {
            **forward.last,
            **forward.progress(trainer.state.global_step),
            f"{PREFIX}done": 1,
            f"{PREFIX}load_s": round(load_s, 3),
            f"{PREFIX}train_s": round(float(output.metrics.get("train_runtime", 0.0)), 3),
            f"{PREFIX}torch_threads": threads,
            f"{PREFIX}n_train_rows": len(train_rows),
            f"{PREFIX}device": "cuda" if use_cuda() else "cpu",
            f"{PREFIX}reference": reference,
        }
        if use_cuda():
            final[f"{PREFIX}gpu_name"] = torch.cuda.get_device_name()
        report(final, str(adapter_dir))
    del trainer, base, ref_model
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


def run_with_oom_retries(
    settings: dict[str, Any],
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
    report: Report,
    cpus: float = 1,
    oom: str = "retry_halved",
    attempts_path: str | None = None,
    callbacks_for: CallbacksFor | None = None,
    ref_logps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """run_trial, where out of memory is data: each OOM attempt is recorded (``attempts_path``, a path or a
    storage URI, written when any attempt ran out of memory), its memory freed, and with
    ``oom="retry_halved"`` the trial reruns at half the per-device batch and twice the accumulation, down to
    batch 1. When no attempt fits, a final result with ``sweeper/oom: 1`` (and no ``sweeper/done``) is reported
    and returned: the trial ends, the sweep goes on.
    """
    attempts: list[dict[str, Any]] = []
    for number in range(1, 64):
        training = settings["training"]
        probe: dict[str, Any] = {}
        extra = callbacks_for(training) if callbacks_for else []
        try:
            final = run_trial(settings, train_rows, eval_rows, report, cpus, extra, attempt=number, probe=probe,
                              ref_logps=ref_logps)  # fmt: skip
        except OOM_ERRORS as exc:
            error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        else:
            if attempts:
                attempts.append(attempt_row(number, training, "completed", final.get(f"{PREFIX}step"), None))
                _write(attempts_path, attempts)
            return final
        forward = probe.get("forward")
        last = {**forward.last, **forward.progress(forward.step)} if forward is not None else {}
        step = forward.step if forward is not None else 0
        del forward
        free_memory()
        model = probe.get("model")
        row = attempt_row(number, training, "oom", step, error)
        row["freed"] = model is None or model() is None  # nothing of this attempt is left alive
        attempts.append(row)
        _write(attempts_path, attempts)
        smaller = halve(training) if oom == "retry_halved" else None
        if smaller is None:
            final = {**last, f"{PREFIX}oom": 1, f"{PREFIX}attempt": number,
                     f"{PREFIX}device": "cuda" if use_cuda() else "cpu"}  # fmt: skip
            report(final, None)
            return final
        settings = {**settings, "training": smaller}
    raise RuntimeError("unreachable: halving reaches batch 1 in fewer than 64 attempts")


def attempt_row(number: int, training: dict[str, Any], status: str, step: Any, error: str | None) -> dict[str, Any]:
    return {
        "attempt": number,
        "per_device_train_batch_size": training["per_device_train_batch_size"],
        "gradient_accumulation_steps": training["gradient_accumulation_steps"],
        "effective_batch": effective_batch(training),
        "status": status,
        "step": step,
        "error": error,
    }


def _write(location: str | None, attempts: list[dict[str, Any]]) -> None:
    if location is not None:
        write_record(location, attempts)
