"""The baseline: a plain TRL DPOTrainer script, as a user would write it without sweeper.

Same tiny config as the benchmarks' sweeper trials: the builtin tiny Mistral in 4-bit nf4, LoRA r=8 through
``peft_config`` (reference = the base with the adapter disabled), the rows sweeper rendered, one torch thread.

    python benchmarks/plain_trl.py ROWS.jsonl --learning-rate 3e-3 --gradient-accumulation-steps 2

prints one JSON line: train_runtime, examples/s, total wall time of the process so far.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

STARTED = time.monotonic()

# The tiny config every benchmark shares (sweeps/smoke.yaml's, smaller where it only costs time).
CONFIG: dict[str, Any] = {
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 3e-3,
    "max_steps": 24,
    "max_length": 96,
    "logging_steps": 2,
    "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
}


def train(model_path: str, rows: list[dict[str, str]], learning_rate: float, accumulation: int, max_steps: int,
          precompute: bool = False, quantization: str = "4bit") -> dict[str, float]:  # fmt: skip
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    quant = {"4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                        bnb_4bit_compute_dtype=torch.float32),
             "8bit": BitsAndBytesConfig(load_in_8bit=True), "none": None}[quantization]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quant, dtype=torch.float32)
    model.config.use_cache = False
    lora = CONFIG["lora"]
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out, per_device_train_batch_size=CONFIG["per_device_train_batch_size"],
            gradient_accumulation_steps=accumulation, learning_rate=learning_rate, max_steps=max_steps,
            max_length=CONFIG["max_length"], logging_steps=CONFIG["logging_steps"], lr_scheduler_type="cosine",
            optim="paged_adamw_32bit", warmup_steps=0.1, beta=0.1, bf16=False, use_cpu=True, save_strategy="no",
            report_to=[], disable_tqdm=True, seed=42, precompute_ref_log_probs=precompute,
        )  # fmt: skip
        started = time.monotonic()
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer,
                             peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"],
                                                    lora_dropout=lora["lora_dropout"], target_modules="all-linear",
                                                    task_type="CAUSAL_LM"))  # fmt: skip
        init_s = time.monotonic() - started
        output = trainer.train()
    runtime = float(output.metrics["train_runtime"])
    examples = max_steps * CONFIG["per_device_train_batch_size"] * accumulation
    return {"train_runtime": runtime, "examples_per_s": examples / runtime, "init_s": init_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows")
    parser.add_argument("--model", default=None, help="model folder (default: the builtin tiny Mistral)")
    parser.add_argument("--learning-rate", type=float, default=CONFIG["learning_rate"])
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=CONFIG["max_steps"])
    a = parser.parse_args()
    if a.model is None:
        from sweeper.train.tiny import ensure_tiny_model

        a.model = str(ensure_tiny_model())
    with open(a.rows, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    result = train(a.model, rows, a.learning_rate, a.gradient_accumulation_steps, a.max_steps)
    result["process_wall_s"] = time.monotonic() - STARTED
    print(json.dumps(result), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
