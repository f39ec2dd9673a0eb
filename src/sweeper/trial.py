"""One DPO (Q)LoRA trial: TRL ``DPOTrainer`` + PEFT LoRA + bitsandbytes, reporting every log step.

The only module (with ``sweeper.tiny`` and ``sweeper.prepare``) that imports torch, transformers, TRL
and PEFT. It knows nothing of Ray: the caller passes ``report(metrics, checkpoint_dir)``.
``run_with_oom_retries`` turns an out-of-memory error into data: the attempt is recorded, its memory freed,
and the trial reruns at half the per-device batch and twice the accumulation (the same effective batch).
"""

from __future__ import annotations

import gc
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback

from sweeper import estimate, guard, memory
from sweeper.cluster import write_record
from sweeper.space import effective_batch, halve
from sweeper.tiny import resolve_model

# Our own metrics carry this prefix so they never collide with TRL's.
PREFIX = "sweeper/"
Report = Callable[[dict[str, Any], str | None], None]
# What ends an attempt as out of memory: CUDA's allocator error, and Python's on CPU.
OOM_ERRORS = (torch.OutOfMemoryError, MemoryError)


def set_threads(cpus: float) -> int:
    """Torch threads = the trial's CPU share (2 threads fighting over 1 core made steps 15-50x slower)."""
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


def use_cuda() -> bool:
    return torch.cuda.is_available()


def resolve_bf16(training: dict[str, Any]) -> bool:
    """The trial's compute dtype: bf16 where asked, else where the GPU supports it; fp32 on CPU."""
    if training["bf16"] is not None:
        return bool(training["bf16"])
    return bool(use_cuda() and torch.cuda.is_bf16_supported())


def quantization_config(model: dict[str, Any], compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if model["quantization"] == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model["bnb_4bit_quant_type"],
            bnb_4bit_use_double_quant=model["bnb_4bit_use_double_quant"],
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if model["quantization"] == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_model(model: dict[str, Any], bf16: bool) -> tuple[Any, Any]:
    """Tokenizer and base model, loaded fresh for this trial (no state shared between trials)."""
    path = resolve_model(model["name_or_path"])
    dtype = torch.bfloat16 if bf16 else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=model["revision"], trust_remote_code=model["trust_remote_code"]
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(
        path,
        revision=model["revision"],
        trust_remote_code=model["trust_remote_code"],
        quantization_config=quantization_config(model, dtype),
        dtype=dtype,
        device_map={"": 0} if use_cuda() else None,
    )
    base.config.use_cache = False  # incompatible with gradient checkpointing
    return tokenizer, base


def lora_config(model: dict[str, Any]) -> Any:
    from peft import LoraConfig

    lora = model["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora["lora_dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )


def dpo_config(training: dict[str, Any], data: dict[str, Any], output_dir: str, bf16: bool, has_eval: bool) -> Any:
    from trl import DPOConfig

    evaluate = has_eval and training["eval_steps"] is not None
    return DPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=training["per_device_train_batch_size"],
        per_device_eval_batch_size=training["per_device_train_batch_size"],
        gradient_accumulation_steps=training["gradient_accumulation_steps"],
        learning_rate=training["learning_rate"],
        beta=training["beta"],
        loss_type=[training["loss_type"]],
        num_train_epochs=training["num_train_epochs"],
        max_steps=training["max_steps"],
        lr_scheduler_type=training["lr_scheduler_type"],
        optim=training["optim"],
        warmup_steps=training["warmup_steps"],
        weight_decay=training["weight_decay"],
        max_grad_norm=training["max_grad_norm"],
        logging_steps=training["logging_steps"],
        eval_strategy="steps" if evaluate else "no",
        eval_steps=training["eval_steps"] if evaluate else None,
        gradient_checkpointing=training["gradient_checkpointing"],
        seed=training["seed"],
        max_length=data["max_length"],
        bf16=bf16,
        use_cpu=not use_cuda(),
        save_strategy="no",  # the adapter is saved once at the end, as the trial's checkpoint
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


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
    ``ref_logps`` (sweeper.reference.compute_reference_logps, for ``model.reference: shared``) replaces the
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
            from sweeper.reference import use_shared

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
    from sweeper.reference import attach

    if ref_logps is None:
        raise RuntimeError("model.reference: shared, but no shared reference log-probs reached this trial")
    dtype, device = "bf16" if bf16 else "fp32", "cuda" if use_cuda() else "cpu"
    if (ref_logps.get("dtype"), ref_logps.get("device")) != (dtype, device):
        raise RuntimeError(f"shared reference log-probs were computed in {ref_logps.get('dtype')} on "
                           f"{ref_logps.get('device')}, this trial runs {dtype} on {device}: set training.bf16 "
                           "explicitly, or use model.reference: adapter")  # fmt: skip
    return attach(train_rows, ref_logps["train"]), attach(eval_rows, ref_logps["eval"])


def free_memory() -> None:
    """Drop what an attempt left behind: cycles, CUDA's cached blocks and bitsandbytes' paged buffers."""
    gc.collect()
    try:  # bitsandbytes keeps every paged optimizer buffer in a process-wide list
        from bitsandbytes.functional import GlobalPageManager

        GlobalPageManager.get_instance().paged_tensors.clear()
    except (ImportError, AttributeError):
        pass
    if use_cuda():
        torch.cuda.empty_cache()


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
