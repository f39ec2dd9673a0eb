"""The memory estimate against a GPU: measured peaks of real DPO QLoRA steps on a Mistral-7B-shaped model.

    PYTHONPATH=src python benchmarks/gpu_memory.py [--batches 1 2 4 8] [--max-length 1536] [--steps 2]
    PYTHONPATH=src python benchmarks/gpu_memory.py --dry-run      # on a CPU: checks that everything builds

On a GPU: builds Mistral-7B-Instruct-v0.2's architecture from its config with random weights (nothing is
downloaded: the tokenizer is sweeper's builtin one, whose ids fit the 32,000-token vocabulary; memory depends on
shapes, not on values), saves it once in bf16, and for each per-device batch runs a fresh subprocess that trains
a sweeper trial with the sweep's own trial code (sweeper.train.trial.run_with_oom_retries: 4-bit nf4 with
double quantization, LoRA r=16 on all linear layers, paged AdamW 32-bit, gradient checkpointing, reference =
the adapter disabled) for --steps optimizer steps on rows long enough that every sequence is truncated to
--max-length (the estimate's worst case). It prints torch.cuda's peaks (allocated, reserved), NVML's
device-wide peak, the prediction and its band. Then it drives one real out-of-memory error: the smallest power
of two whose predicted band lies wholly above the card, through the same trial code, and prints the attempts
it recorded (the halved retry). About 6 minutes on one H200 (load and save of the 14.5 GB model included).

--dry-run (CI, no GPU): builds the 7B config on the meta device and checks its parameter count against the
estimate's shape, prints the predictions for the batches and the batch the OOM step would start from on an
80 GB card, and runs the same per-batch code for real on CPU with a 2-layer model of the same family at
max_length 64, including the OOM path (an injected OOM at batch 2: a CPU cannot run out of GPU memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import long_rows, one_trial  # isort: skip

from sweeper.records.metrics import (
    CUDA_MAX_ALLOCATED_MB,
    CUDA_MAX_RESERVED_MB,
    DONE,
    NVML_PEAK_USED_MB,
    OOM,
    PER_DEVICE_TRAIN_BATCH_SIZE,
)

# Mistral-7B-Instruct-v0.2's config.json (the fields that set shapes); sweeper.plan.estimate.MISTRAL_7B
MISTRAL_7B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 32768,
              "rope_theta": 1e6, "sliding_window": None, "tie_word_embeddings": False}  # fmt: skip
SMALL = {**MISTRAL_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2}  # fmt: skip  # the dry run's stand-in: same family and vocabulary
GIB = 2**30


def config(fields: dict[str, Any]) -> Any:
    from transformers import MistralConfig

    from sweeper.train.tiny import build_tokenizer

    tok = build_tokenizer("mistral")
    return MistralConfig(**fields, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)  # fmt: skip


def build_model(folder: Path, fields: dict[str, Any], device: str) -> None:
    """Random weights of the given shape, saved in bf16 with sweeper's builtin tokenizer."""
    import torch
    from transformers import MistralForCausalLM

    from sweeper.train.tiny import build_tokenizer

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = MistralForCausalLM(config(fields))
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(folder, max_shard_size="4GB")
    build_tokenizer("mistral").save_pretrained(folder)
    del model


def count_parameters(fields: dict[str, Any]) -> int:
    """Parameters of the architecture, built on the meta device (no memory)."""
    import torch
    from transformers import MistralForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in MistralForCausalLM(config(fields)).parameters())


def trial_settings(model: str, batch: int, max_length: int, steps: int) -> Any:
    return one_trial(
        {"name_or_path": model, "quantization": "4bit", "reference": "adapter", "bnb_4bit_use_double_quant": True},
        {"max_length": max_length},
        {"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "max_steps": steps,
         "logging_steps": 1, "eval_steps": None, "gradient_checkpointing": True, "optim": "paged_adamw_32bit"},
        lora={"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"},
    )  # fmt: skip


def cell(model: str, batch: int, max_length: int, steps: int, attempts: Path) -> dict[str, Any]:
    """One trial in this process, as a sweep's worker runs it; its final result and its recorded attempts."""
    from sweeper.plan import estimate
    from sweeper.train.trial import TrialJob, oom_injection, run_with_oom_retries

    settings = trial_settings(model, batch, max_length, steps)
    rows = long_rows(batch * steps, 400)
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    final = run_with_oom_retries(TrialJob(settings, rows, [], 1), lambda m, _c: results.append(m),
                                 attempts_path=str(attempts), callbacks_for=oom_injection(os.environ))  # fmt: skip
    band = estimate.predict_band(settings)
    return {"final": final, "attempts": json.loads(attempts.read_text()) if attempts.is_file() else [],
            "predicted": estimate.predict_settings(settings), "band": band,
            "seconds": round(time.monotonic() - started, 1)}  # fmt: skip


def run_cell(model: str, batch: int, max_length: int, steps: int, env: dict[str, str] | None = None) -> dict:
    """cell() in a fresh subprocess: CUDA's peak counters and the allocator's cache start from zero."""
    with tempfile.TemporaryDirectory(prefix="sweeper-gpu-memory-") as tmp:
        cmd = [sys.executable, __file__, "--cell", model, str(batch), str(max_length), str(steps),
               str(Path(tmp) / "attempts.json")]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    found = [line for line in done.stdout.splitlines() if line.startswith("CELL ")]
    if not found:
        raise SystemExit(f"batch {batch} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(found[0][5:])


def row(batch: int, out: dict) -> str:
    final, band = out["final"], out["band"] or (float("nan"), float("nan"))
    gib = {k: final.get(k) for k in (CUDA_MAX_ALLOCATED_MB, CUDA_MAX_RESERVED_MB, NVML_PEAK_USED_MB)}
    shown = [f"{v / 1024:.1f}" if isinstance(v, int | float) else "-" for v in gib.values()]
    status = "done" if final.get(DONE) else ("oom" if final.get(OOM) else "?")
    return (
        f"| {batch} | {final.get(PER_DEVICE_TRAIN_BATCH_SIZE, batch)} | {status} | "
        + " | ".join(shown)
        + f" | {out['predicted']:.1f} | {band[0]:.1f}-{band[1]:.1f} | {out['seconds']} |"
    )


HEADER = ("| per-device batch | ran at | status | torch allocated GiB | torch reserved GiB | NVML used GiB | "
          "predicted GiB | band | seconds |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip


def oom_batch(max_length: int, memory_gib: float, model: str) -> int:
    """The smallest power of two whose whole predicted band lies above the card."""
    from sweeper.plan import estimate

    batch = 1
    while True:
        band = estimate.predict_band(trial_settings(model, batch, max_length, 2))
        assert band is not None
        if band[0] > memory_gib:
            return batch
        batch *= 2


def attempts_lines(out: dict) -> list[str]:
    return [f"  attempt {a.get('attempt')}: batch {a.get('per_device_train_batch_size')} x accumulation "
            f"{a.get('gradient_accumulation_steps')}: {a.get('status')}"
            + (f" at step {a['step']}" if a.get("step") is not None else "") for a in out["attempts"]]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--max-length", type=int, default=1536)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: check that it builds and runs (CI)")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the random 7B model in this folder")
    parser.add_argument("--cell", nargs=5, help=argparse.SUPPRESS)  # model batch max_length steps attempts.json
    args = parser.parse_args(argv)
    if args.cell:
        model, batch, length, steps, attempts = args.cell
        print("CELL " + json.dumps(cell(model, int(batch), int(length), int(steps), Path(attempts))), flush=True)
        return 0

    import torch

    from sweeper.plan import estimate

    n = count_parameters(MISTRAL_7B)
    expected = estimate.MISTRAL_7B.n_params()  # linear layers and embeddings; the norms are the difference
    print(f"Mistral-7B architecture: {n / 1e9:.3f}B parameters (the estimate's shape counts {expected / 1e9:.3f}B "
          "without the norms)")  # fmt: skip
    if abs(n - expected) > 0.001 * n:
        raise SystemExit("the 7B config does not match sweeper.plan.estimate.MISTRAL_7B")
    if args.dry_run:
        return dry_run(args)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --dry-run to check the script on a CPU")
    memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    print(f"GPU: {torch.cuda.get_device_name(0)}, {memory_gib:.1f} GiB")
    with tempfile.TemporaryDirectory(prefix="sweeper-mistral7b-") as tmp:
        folder = args.keep or Path(tmp) / "mistral-7b-random"
        if not (folder / "config.json").is_file():
            started = time.monotonic()
            build_model(folder, MISTRAL_7B, "cuda")
            torch.cuda.empty_cache()
            print(f"built and saved the random 7B model in {time.monotonic() - started:.0f} s")
        print(
            f"\nmax_length {args.max_length}, {args.steps} DPO steps per batch, 4-bit nf4 + double quantization, "
            "LoRA r=16 all-linear, paged AdamW 32-bit, gradient checkpointing, reference: adapter"
        )
        print(HEADER)
        for batch in args.batches:
            print(row(batch, run_cell(str(folder), batch, args.max_length, args.steps)), flush=True)
        too_big = oom_batch(args.max_length, memory_gib, str(folder))
        print(f"\nOut of memory on purpose: batch {too_big} is predicted wholly above {memory_gib:.0f} GiB")
        out = run_cell(str(folder), too_big, args.max_length, args.steps)
        print(HEADER + "\n" + row(too_big, out))
        print("\n".join(attempts_lines(out)))
    return 0


def dry_run(args: argparse.Namespace) -> int:
    from sweeper.plan import estimate

    print(f"\nPredicted at max_length {args.max_length} (one GPU; the real run prints these beside its measurements):")
    for batch in args.batches:
        settings = trial_settings("mistralai/Mistral-7B-Instruct-v0.2", batch, args.max_length, args.steps)
        band = estimate.predict_band(settings)
        assert band is not None
        print(f"  batch {batch}: {estimate.predict_settings(settings):.1f} GiB (band {band[0]:.1f}-{band[1]:.1f})")
    start = oom_batch(args.max_length, 80.0, "mistralai/Mistral-7B-Instruct-v0.2")
    print(f"  the OOM step would start at batch {start} on an 80 GiB card")
    with tempfile.TemporaryDirectory(prefix="sweeper-gpu-memory-dry-") as tmp:
        folder = Path(tmp) / "mistral-small-random"
        build_model(folder, SMALL, "cpu")
        print("\nOn CPU, a 2-layer model of the same family at max_length 64 (the real run's code path):")
        print(HEADER)
        for batch in (1, 2):
            print(row(batch, run_cell(str(folder), batch, 64, args.steps)), flush=True)
        out = run_cell(str(folder), 2, 64, args.steps, env={"SWEEPER_TEST_OOM_AT_STEP": "1"})
        print("OOM path (injected at step 1 on CPU; a GPU run drives a real one):")
        print(HEADER + "\n" + row(2, out))
        print("\n".join(attempts_lines(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
