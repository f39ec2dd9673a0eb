"""Pausable trials: HF Trainer checkpoints at every log step, and continuing a trial exactly from one.

A sweep with ``early_terminate.on_prune: pause`` pauses a trial below the bar instead of stopping it (Ray Tune's
``TrialScheduler.PAUSE``) and may resume it later. The trial then needs everything to continue exactly: the
Trainer's own checkpoint format holds it (the LoRA adapter, ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``
and ``trainer_state.json`` with the step, from which HF skips the batches already trained). sweeper adds
``sweeper_state.json``: the trial's elapsed seconds, so that its clock (and the compute it is charged) goes on
counting after the resume.

No Ray here: the caller reports the checkpoint folder and hands a restored one back as ``resume_from``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweeper.records.metrics import RESUMED_AT_STEP

# HF's names (transformers.trainer_utils.PREFIX_CHECKPOINT_DIR, trainer.TRAINER_STATE_NAME)
PREFIX = "checkpoint"
TRAINER_STATE = "trainer_state.json"
SWEEPER_STATE = "sweeper_state.json"
# Early stopping: the best checkpoint's adapter inside each later checkpoint (what load_best_model_at_end loads)
BEST = "best-adapter"
NOT_ADAPTER = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "scaler.pt", TRAINER_STATE, SWEEPER_STATE, BEST)


def finish_checkpoint(output_dir: str, step: int, elapsed_s: float, best: str | None = None) -> str:
    """The checkpoint the Trainer just wrote for ``step``, with sweeper's state added; older ones are deleted
    (each was copied to the trial's storage when it was reported).

    ``best`` (early stopping: the Trainer's best checkpoint so far, which ``load_best_model_at_end`` loads): kept
    when it is an older checkpoint here, and its adapter copied into this one (BEST), so that a trial resumed from
    this checkpoint in another process still ends with its best adapter (:func:`restore_best`).
    """
    folder = Path(output_dir) / f"{PREFIX}-{step}"
    state: dict[str, Any] = {"step": step, "elapsed_s": elapsed_s}
    if best is not None and Path(best).is_dir() and Path(best).resolve() != folder.resolve():
        shutil.copytree(best, folder / BEST, ignore=shutil.ignore_patterns(*NOT_ADAPTER), dirs_exist_ok=True)
        state["best"] = BEST
    (folder / SWEEPER_STATE).write_text(json.dumps(state) + "\n")
    keep = {folder.resolve(), *([Path(best).resolve()] if best is not None else [])}
    for older in Path(output_dir).glob(f"{PREFIX}-*"):
        if older.resolve() not in keep and older.is_dir():
            shutil.rmtree(older, ignore_errors=True)
    return str(folder)


def restore_best(folder: str, work: str) -> str | None:
    """A resumed trial's best checkpoint so far (early stopping), copied out of its restored checkpoint into the
    trial's work folder (Ray may delete the restored checkpoint while the trial runs); None when it has none."""
    own = Path(folder) / SWEEPER_STATE
    state = json.loads(own.read_text()) if own.is_file() else {}
    if not state.get("best") or not (Path(folder) / state["best"]).is_dir():
        return None
    target = Path(work) / "restored-best"
    shutil.copytree(Path(folder) / state["best"], target, dirs_exist_ok=True)
    return str(target)


def resumable(folder: str | None) -> bool:
    """Whether a restored checkpoint is a full Trainer checkpoint (a trial's final adapter is not)."""
    return folder is not None and (Path(folder) / TRAINER_STATE).is_file()


def restored_progress(folder: str) -> dict[str, Any]:
    """What the trial had done when the checkpoint was taken: its step, its elapsed seconds and its logs so far
    (the guard judges the whole curve, not only what follows the resume)."""
    trainer_state = json.loads((Path(folder) / TRAINER_STATE).read_text())
    own = Path(folder) / SWEEPER_STATE
    sweeper_state = json.loads(own.read_text()) if own.is_file() else {}
    logs = [row for row in trainer_state.get("log_history", []) if "train_runtime" not in row]
    return {
        "step": int(trainer_state.get("global_step", 0)),
        "elapsed_s": float(sweeper_state.get("elapsed_s", 0.0)),
        "logs": logs,
    }


def resume_fields(progress: dict[str, Any]) -> dict[str, Any]:
    """What every result after a resume carries: the step it resumed from (records read it as a continuation)."""
    return {RESUMED_AT_STEP: progress["step"]}


@contextlib.contextmanager
def adapter_dtype_kept(model: Any) -> Iterator[None]:
    """While the Trainer resumes: PEFT's ``load_adapter`` loads the checkpoint's weights into the adapter as it is.

    HF's ``_load_from_checkpoint`` calls ``model.load_adapter(folder, adapter, is_trainable=True)``, whose default
    ``autocast_adapter_dtype=True`` casts a bf16 adapter to fp32. TRL trains a QLoRA adapter in bf16, so a resumed
    4-bit trial would go on in fp32 (its margins off by ~1e-3 from the uninterrupted run after a few steps,
    measured). With the cast off the bf16 weights are copied into the bf16 adapter and the curve is the same.
    """
    if not hasattr(model, "load_adapter"):
        yield
        return
    model.load_adapter = functools.partial(type(model).load_adapter, model, autocast_adapter_dtype=False)
    try:
        yield
    finally:
        del model.load_adapter
