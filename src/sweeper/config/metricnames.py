"""The metric names a spec may optimize: what TRL's DPOTrainer logs (train and ``eval_`` forms) and sweeper's own,
and which way each one is better.

Light module: plain data. The TRL names are those TRL 1.16 logs each logging step (../shared/RECIPES.md); an
evaluation adds the ``eval_`` prefix and the Trainer's own ``eval_runtime``-style counters.
"""

from __future__ import annotations

import re

from sweeper.records import metrics

__all__ = ["KNOWN_METRICS", "TRL_METRICS", "infer_goal"]

TRL_METRICS = (
    "loss", "grad_norm", "learning_rate", "entropy", "num_tokens", "logits/chosen", "logits/rejected",
    "mean_token_accuracy", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
    "logps/chosen", "logps/rejected", "epoch",
)  # fmt: skip
_EVAL_ONLY = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
_SWEEPER = tuple(v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str) and v != metrics.PREFIX)

KNOWN_METRICS = frozenset((*TRL_METRICS, *(f"eval_{n}" for n in TRL_METRICS), *_EVAL_ONLY, *_SWEEPER))

_MINIMIZE = re.compile(r"(^|[_/])(loss|grad_norm|perplexity|ppl|runtime|elapsed_s|peak|mb|gb)($|[_/])")
_MAXIMIZE = re.compile(r"(margins|accurac|rewards/chosen|reward|logps/chosen|samples_per_second|steps_per_second)")


def infer_goal(name: str) -> str | None:
    """``minimize`` for loss-like names, ``maximize`` for margins, accuracies and rewards of the chosen answer,
    else None (ask the user): ``rewards/rejected`` and ``logps/rejected`` are left to the user on purpose, since
    pushing them down is what margin hacking looks like."""
    if "rejected" in name:
        return None
    if _MINIMIZE.search(name):
        return "minimize"
    if _MAXIMIZE.search(name):
        return "maximize"
    return None
