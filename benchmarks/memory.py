"""P4: peak memory of one trial, model.reference adapter ÷ separate (and shared), side by side.

    PYTHONPATH=src python benchmarks/memory.py [--repeats 3] [--quantization none 4bit] [--size medium|large]

No GPU here, so the peak is the process's resident memory (RSS). Each run is a fresh subprocess (the peak
is per process): it imports everything, prepares the rows, reads its RSS (the baseline: Python, torch,
transformers, TRL, ~0.5 GB here, the same in every mode), trains one sweeper trial and reads its peak RSS.
Reported: the peak, and the peak above the baseline (what the trial itself added: weights, the reference
copy, LoRA, optimizer, activations). The builtin tiny model's weights are ~1 MB, so a separate copy would
be invisible; this uses a wider random Mistral of the same vocabulary ("medium": hidden 512, 8 layers,
~27M parameters, built locally) so that the weights weigh as they do in a real QLoRA run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, fmt, median  # isort: skip

SIZES = {
    "medium": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
               "num_key_value_heads": 4},  # ~27M parameters
    "large": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 12, "num_attention_heads": 16,
              "num_key_value_heads": 4},  # ~135M parameters: weights weigh more against the process overhead
}  # fmt: skip


def build_medium(folder: Path, size: str = "medium") -> None:
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from sweeper.train.tiny import ensure_tiny_model

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    config = MistralConfig(vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=False,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, **SIZES[size])  # fmt: skip
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def settle() -> None:
    """Drop freed memory back to the OS, so RSS counts what is alive (glibc keeps freed arenas otherwise)."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def precompute(quantization: str, model: str, out: str) -> None:
    """In a subprocess, as a sweep's Ray task does: the shared values, written for the measured process."""
    import torch

    torch.set_num_threads(1)
    from _common import rows, settings

    from sweeper.train.reference import compute_reference_logps

    s = settings("shared", quantization, name_or_path=model)
    Path(out).write_text(json.dumps(compute_reference_logps(s, rows()[0][:64], [], cpus=1)))


def one(mode: str, quantization: str, model: str, refs_file: str, steps: int = 8) -> None:
    """In the subprocess: baseline RSS, one trial, its peaks (loading included, and training alone)."""
    import torch
    from transformers import TrainerCallback

    torch.set_num_threads(1)
    from _common import rows, settings

    from sweeper.train import memory
    from sweeper.train.trial import TrialJob, run_trial

    class TrainPhase(TrainerCallback):
        """At train start: note the peak so far (model loading), then measure training alone."""

        load_peak = 0.0

        def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            TrainPhase.load_peak = memory.peak_rss_mb()
            settle()
            memory.reset_peak_rss()

    train_rows = rows()[0][:64]
    s = settings(mode, quantization, name_or_path=model)
    s = s.with_training(s.training.model_copy(update={"max_steps": steps}))
    refs = json.loads(Path(refs_file).read_text()) if mode == "shared" else None
    settle()
    baseline = rss_mb()
    final = run_trial(TrialJob(s, train_rows, ref_logps=refs), lambda m, c: None, callbacks=[TrainPhase()])
    train_peak = final["sweeper/peak_rss_mb"]
    print(json.dumps({"baseline_mb": baseline, "train_peak_mb": train_peak,
                      "peak_mb": max(train_peak, TrainPhase.load_peak)}), flush=True)  # fmt: skip


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantization", nargs="+", default=["none", "4bit"])
    parser.add_argument("--size", choices=sorted(SIZES), default="medium", help="the random Mistral's size")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the peak comes in the first)")
    parser.add_argument("--one", nargs=5, metavar=("MODE", "QUANT", "MODEL", "REFS", "STEPS"))
    parser.add_argument("--precompute", nargs=3, metavar=("QUANT", "MODEL", "OUT"))
    a = parser.parse_args()
    if a.one:
        one(*a.one[:4], steps=int(a.one[4]))
        return
    if a.precompute:
        precompute(*a.precompute)
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])}
    modes = ["adapter", "separate", "shared"]
    with tempfile.TemporaryDirectory(prefix="sweeper-medium-") as folder:
        build_medium(Path(folder), a.size)
        for quantization in a.quantization:
            refs = str(Path(folder) / f"refs-{quantization}.json")
            run(["--precompute", quantization, folder, refs], env)
            got: dict[str, dict[str, list[float]]] = {m: {"peak": [], "load+train": [], "train": []} for m in modes}
            for r in range(a.repeats):
                for mode in modes[r % 3 :] + modes[: r % 3]:
                    one_run = run(["--one", mode, quantization, folder, refs, str(a.steps)], env)
                    got[mode]["peak"].append(one_run["peak_mb"])
                    got[mode]["load+train"].append(one_run["peak_mb"] - one_run["baseline_mb"])
                    got[mode]["train"].append(one_run["train_peak_mb"] - one_run["baseline_mb"])
            print(
                f"P4 peak RSS, {a.size} model ({quantization}, {a.steps} steps), {a.repeats} fresh processes "
                "per mode, MiB (peak; above the pre-load baseline with loading; above it while training):"
            )
            for mode in modes:
                print(f"  {mode:9s} " + "; ".join(f"{k} {fmt(v)}" for k, v in got[mode].items()))
            for mode in ("adapter", "shared"):
                ratios = ", ".join(f"{k} {median(got[mode][k]) / median(got['separate'][k]):.3f}" for k in got[mode])
                print(f"P4 {quantization} {mode} / separate: {ratios}")


if __name__ == "__main__":
    main()
