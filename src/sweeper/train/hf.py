"""The Hugging Face builders every model job shares: threads, device, dtype, 4-bit/8-bit loading, LoRA, DPOConfig.

``sweeper.train.trial``, ``sweeper.train.reference`` and ``sweeper.train.evaluate`` load and configure the base
model through these functions, so a trial, the shared reference precompute and the held-out evaluation all see
the same model in the same dtype.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from sweeper.config.spec import DataSection, ModelSection, TrainingSection
from sweeper.errors import SweeperError
from sweeper.train.models import resolve_model


def set_threads(cpus: float) -> int:
    """Torch threads = the trial's CPU share (2 threads fighting over 1 core made steps 15-50x slower)."""
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


def use_cuda() -> bool:
    return torch.cuda.is_available()


def resolve_bf16(training: TrainingSection) -> bool:
    """The trial's compute dtype: bf16 where asked, else where the GPU supports it; fp32 on CPU."""
    return bf16_for(training.bf16)


def bf16_for(asked: bool | None) -> bool:
    """``training.bf16`` resolved: True/False as asked; None = bf16 where the GPU supports it, fp32 on CPU."""
    if asked is not None:
        return bool(asked)
    return bool(use_cuda() and torch.cuda.is_bf16_supported())


def quantization_config(model: ModelSection, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if model.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=model.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if model.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_model(model: ModelSection, bf16: bool) -> tuple[Any, Any]:
    """Tokenizer and base model, loaded fresh for this trial (no state shared between trials)."""
    path = resolve_model(model.name_or_path)
    dtype = torch.bfloat16 if bf16 else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model.revision, trust_remote_code=model.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    attention = {"attn_implementation": model.attn_implementation} if model.attn_implementation else {}
    if model.attn_implementation == "flash_attention_2" and not use_cuda():
        raise SweeperError("model.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn "
                           "package; this trial runs on the CPU: use sdpa or eager")  # fmt: skip
    base = AutoModelForCausalLM.from_pretrained(
        path,
        revision=model.revision,
        trust_remote_code=model.trust_remote_code,
        quantization_config=quantization_config(model, dtype),
        dtype=dtype,
        device_map={"": 0} if use_cuda() else None,
        **attention,
    )
    base.config.use_cache = False  # incompatible with gradient checkpointing
    keep_4bit_on_the_training_path(base)
    return tokenizer, base


def keep_4bit_on_the_training_path(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel; return the layers set.

    bitsandbytes 0.50 (nn/modules.py, Linear4bit.forward), on a CPU with AVX512-BF16: the first eval-mode forward
    whose input does not require grad (an evaluation, the reference precompute, the reference pass of a LoRA
    trial) repacks the layer's weights for ``gemv_4bit`` for good. Every later forward, training included, then
    goes through that kernel, which computes in bf16 (outputs off by ~6e-3 from the training path) and passes no
    gradient back: LoRA layers below it stop learning, silently. The repack is lossy to undo, so it is prevented:
    ``support_avx512bf16_for_cpu``, the per-layer switch it reads, is turned off before any forward. Evaluation and
    training then run the same kernel (``gemm_4bit``) and agree bit for bit. On a GPU the attribute is unused.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        if getattr(layer.weight.quant_state, "packing_format_for_cpu", False):
            raise RuntimeError(f"{type(layer).__name__} was already repacked for CPU inference: set it up before "
                               "any eval forward")  # fmt: skip
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def lora_config(model: ModelSection) -> Any:
    from peft import LoraConfig

    lora = model.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def dpo_config(training: TrainingSection, data: DataSection, output_dir: str, bf16: bool, has_eval: bool) -> Any:
    from trl import DPOConfig

    evaluate = has_eval and training.eval_steps is not None
    if training.use_liger_kernel and not use_cuda():
        raise SweeperError("training.use_liger_kernel: Liger's fused kernels run on CUDA GPUs (and need the "
                           "liger-kernel package); this trial runs on the CPU: set it to false")  # fmt: skip
    stopping = evaluate and training.early_stopping_patience is not None
    best: dict[str, Any] = {}
    if stopping:  # checkpoints at every evaluation, the best one loaded at the end (and saved as the adapter)
        best = {"save_strategy": "steps", "save_steps": training.eval_steps, "save_total_limit": 2,
                "load_best_model_at_end": True, "metric_for_best_model": training.metric_for_best_model,
                "greater_is_better": training.greater_is_better,
                # a paused and resumed trial goes on counting evaluations without improvement where it paused
                "restore_callback_states_from_checkpoint": True}  # fmt: skip
    return DPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=training.per_device_train_batch_size,
        per_device_eval_batch_size=training.per_device_train_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        beta=training.beta,
        loss_type=[training.loss_type],
        num_train_epochs=training.num_train_epochs,
        max_steps=training.max_steps,
        lr_scheduler_type=training.lr_scheduler_type,
        optim=training.optim,
        warmup_steps=training.warmup_steps,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        logging_steps=training.logging_steps,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=training.eval_steps if evaluate else None,
        gradient_checkpointing=training.gradient_checkpointing,
        use_liger_kernel=training.use_liger_kernel,
        padding_free=training.padding_free,
        precompute_ref_log_probs=training.precompute_ref_log_probs,
        seed=training.seed,
        max_length=data.max_length,
        bf16=bf16,
        use_cpu=not use_cuda(),
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        # the adapter is saved once at the end, as the trial's checkpoint (early stopping: the best one)
        **(best or {"save_strategy": "no"}),
    )


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
