"""Training and evaluating models: the only layer that imports torch, transformers, TRL, PEFT and bitsandbytes.

One DPO (Q)LoRA trial, the shared reference precompute, held-out evaluation, the builtin tiny model and the
Hugging Face builders they share. Names are resolved on first use (PEP 562), so ``import sweeper.train.memory``
or ``sweeper.train.tiny`` stays light, and torch loads only where a model is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "run_trial": "trial",
    "run_with_oom_retries": "trial",
    "oom_injection": "trial",
    "compute_reference_logps": "reference",
    "run_jobs": "evaluate",
    "resolve_model": "models",
    "ensure_tiny_model": "tiny",
    "prepare_data": "prepare",
    "save_prepared": "prepare",
    "load_model": "hf",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'sweeper.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sweeper.train.{_WHERE[name]}"), name)
