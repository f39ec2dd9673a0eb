"""Reference log-probs of every example, computed once: TRL's own precompute on the trial's exact base.

``model.reference: shared`` trials read these instead of running the reference forward at every step. To
give the numbers an ``adapter`` trial computes, this loads the base exactly as a trial does
(``sweeper.train.hf.load_model``: same quantization, compute dtype and device), attaches the trial's LoRA
through ``peft_config`` and lets TRL's ``DPOTrainer(precompute_ref_log_probs=True)`` tokenize, truncate
(``max_length``, keep_start) and run the base with the adapter disabled, as it does inside a trial.

Heavy module (torch, TRL). ``attach`` and ``use_shared`` are what the trial calls.
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any

from sweeper.plan.settings import TrialSettings
from sweeper.records.refcache import Logps

ROW_COLUMN = "sweeper_row"  # the row's index, carried through TRL's tokenize/filter to map values back
CHOSEN, REJECTED = "ref_chosen_logps", "ref_rejected_logps"  # TRL 1.16's column names (DataCollatorForPreference)
PRECOMPUTE_BATCH = 8


def compute_reference_logps(settings: TrialSettings, train_rows: list[dict[str, str]],
                            eval_rows: list[dict[str, str]], cpus: float = 1) -> dict[str, Any]:  # fmt: skip
    """``{"train": [[chosen, rejected] | None], "eval": [...], "dtype", "device", "seconds"}`` in row order.

    None marks a row TRL drops (its prompt alone fills max_length): a trial drops it too.
    """
    from datasets import Dataset
    from trl import DPOTrainer

    from sweeper.train.hf import dpo_config, load_model, lora_config, resolve_bf16, set_threads, use_cuda

    started = time.monotonic()
    set_threads(cpus)
    bf16 = resolve_bf16(settings.training)
    tokenizer, base = load_model(settings.model, bf16)
    out: dict[str, Any] = {}
    datasets = {name: Dataset.from_list([{**row, ROW_COLUMN: i} for i, row in enumerate(rows)]) if rows else None
                for name, rows in (("train", train_rows), ("eval", eval_rows))}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sweeper-refs-") as work:
        args = dpo_config(settings.training, settings.data, work, bf16, has_eval=False)
        args.precompute_ref_log_probs = True
        args.precompute_ref_batch_size = PRECOMPUTE_BATCH
        trainer = DPOTrainer(model=base, ref_model=None, args=args, train_dataset=datasets["train"],
                             eval_dataset=datasets["eval"], processing_class=tokenizer,
                             peft_config=lora_config(settings.model))  # fmt: skip
        for name, rows, done in (("train", train_rows, trainer.train_dataset),
                                 ("eval", eval_rows, trainer.eval_dataset)):  # fmt: skip
            values: Logps = [None] * len(rows)
            if done is not None:
                for i, c, r in zip(done[ROW_COLUMN], done[CHOSEN], done[REJECTED], strict=True):
                    values[i] = [float(c), float(r)]
            out[name] = values
        del trainer, base
    out.update(dtype="bf16" if bf16 else "fp32", device="cuda" if use_cuda() else "cpu",
               seconds=round(time.monotonic() - started, 3))  # fmt: skip
    return out


def attach(rows: list[dict[str, str]], values: Logps) -> list[dict[str, Any]]:
    """Rows with TRL's precomputed-reference columns; NaN where TRL drops the row (it never reaches a batch)."""
    if len(values) != len(rows):
        raise ValueError(f"shared reference log-probs for {len(values)} rows, but the trial has {len(rows)} rows")
    out = []
    for row, value in zip(rows, values, strict=True):
        chosen, rejected = value if value is not None else (math.nan, math.nan)
        out.append({**row, CHOSEN: float(chosen), REJECTED: float(rejected)})
    return out


def use_shared(trainer: Any) -> None:
    """Make a DPOTrainer read the reference log-probs from its batches instead of running the reference.

    Setting ``precompute_ref_log_probs=True`` in DPOConfig would make TRL hash every weight and recompute the
    values (or look for its own cache); the columns are already in the dataset, so only the switch that
    ``_compute_loss`` reads is set (TRL 1.16: ``self.precompute_ref_logps``).
    """
    if not hasattr(trainer, "precompute_ref_logps"):
        raise RuntimeError("this TRL's DPOTrainer lacks 'precompute_ref_logps': model.reference: shared needs TRL 1.16")
    dataset = trainer.train_dataset
    if CHOSEN not in dataset.column_names or REJECTED not in dataset.column_names:
        raise RuntimeError(f"the training dataset lacks {CHOSEN}/{REJECTED}: shared reference log-probs not attached")
    trainer.precompute_ref_logps = True
