"""The margin-hacking guard: reward margins can be gamed, so read them next to loss, log-probs and eval loss.

DPO's implicit reward margins keep rising when the policy merely pushes rejected answers down: loss
falls to ~0, margins reach 15-120, and on real runs (TRL issue 1236, the collapsed run in
../shared/curves) rejected log-probs fell from -433 to -1784 while chosen barely moved. A guard on
chosen log-probs alone misses that; loss near 0 with very large margins catches it. Eval loss rising
for 3+ evaluations while margins rise is overfitting (zephyr-7b-beta, 3 epochs).

Pure functions over a trial's logged rows (TRL key names). Light module.
"""

from __future__ import annotations

import statistics
from typing import Any

# Thresholds, each with why.
LOSS_FLOOR = 0.01  # sigmoid DPO loss this low means margins / beta > ~4.6 on nearly every pair
HUGE_MARGIN = 10.0  # margins of 15-20+ came with collapsed log-probs in TRL issue 1236
CHOSEN_DROP = 0.5  # chosen log-probs falling below 1.5x their start (and by > 20 nats): the policy unlearns text
CHOSEN_DROP_NATS = 20.0
EVAL_RISES = 3  # evaluations in a row with eval loss up and eval margins up
EARLY_FRACTION = 0.2  # "early" = within the first 20% of the logged steps
DEFAULT_BETA = 0.1  # TRL's DPOConfig default, where a curve does not say its beta


def verdict(rows: list[dict[str, Any]], beta: float | None = None) -> str:
    """'ok' or 'flagged: <reason>' for a curve of logged rows (train and eval rows mixed, in order); ``beta`` is the
    trial's DPO beta (rewards are beta x a log-ratio)."""
    checks = (
        _degenerate(rows),
        _chosen_collapse(rows, beta or DEFAULT_BETA),
        _pinned_accuracy(rows),
        _overfitting(rows),
    )
    reasons = [r for r in checks if r]
    return "ok" if not reasons else "flagged: " + "; ".join(reasons)


def is_flagged(text: str | None) -> bool:
    return bool(text) and str(text).startswith("flagged")


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]


def _degenerate(rows: list[dict[str, Any]]) -> str | None:
    for row in rows:
        loss, margin = row.get("loss"), row.get("rewards/margins")
        if isinstance(loss, int | float) and isinstance(margin, int | float):
            if loss < LOSS_FLOOR and margin > HUGE_MARGIN:
                return f"loss {loss:.3g} with margins {margin:.3g} (degenerate: margins bought by collapse)"
    return None


def _chosen_collapse(rows: list[dict[str, Any]], beta: float) -> str | None:
    """Chosen log-probs falling far below where they started, sustained, measured on the same examples.

    Eval log-probs (the same held-out rows each time) are compared when logged. Without evaluation, raw train
    log-probs are sums over different batches (their level jumps with answer lengths: -115 to -194 between two
    batches of an unchanged policy), so the check reads ``rewards/chosen`` instead: beta x (policy - reference)
    log-prob of the same batch's chosen answers, 0 at the start. A sustained drop of the log-ratio by more than
    20 nats, or half the chosen answers' typical log-prob, is a collapse.
    """
    chosen = _series(rows, "eval_logps/chosen")
    if len(chosen) >= 2:
        start, end = chosen[0], statistics.median(chosen[-1:])
        if end < start - max(CHOSEN_DROP_NATS, CHOSEN_DROP * abs(start)):
            return f"held-out chosen log-probs fell from {start:.4g} to {end:.4g}"
        return None
    rewards = _series(rows, "rewards/chosen")
    window = max(3, len(rewards) // 5)
    if len(rewards) < 2 * window:
        return None
    ratio = statistics.median(rewards[-window:]) / beta  # nats below the reference, on the same examples
    level = abs(statistics.median(_series(rows, "logps/chosen")[:window] or [0.0]))  # the answers' log-prob at start
    if ratio < -max(CHOSEN_DROP_NATS, CHOSEN_DROP * level):
        return (f"chosen log-probs fell {-ratio:.4g} nats below the reference's on the same examples "
                f"(rewards/chosen {ratio * beta:.3g} at beta {beta:g})")  # fmt: skip
    return None


def _pinned_accuracy(rows: list[dict[str, Any]]) -> str | None:
    """Accuracy at 1.0 from early on is only suspicious together with huge margins."""
    accs = _series(rows, "rewards/accuracies")
    if len(accs) < 5:
        return None
    first_full = next((i for i, acc in enumerate(accs) if acc >= 1.0), len(accs))
    pinned = first_full <= len(accs) * EARLY_FRACTION and all(acc >= 1.0 for acc in accs[first_full:])
    margin = max(_series(rows, "rewards/margins"), default=0.0)
    if pinned and margin > HUGE_MARGIN:
        return f"accuracy pinned at 1.0 from the first steps with margins up to {margin:.3g}"
    return None


def _overfitting(rows: list[dict[str, Any]]) -> str | None:
    evals = [r for r in rows if isinstance(r.get("eval_loss"), int | float)]
    run = 0
    for prev, cur in zip(evals, evals[1:], strict=False):
        loss_up = cur["eval_loss"] > prev["eval_loss"]
        margin_up = cur.get("eval_rewards/margins", 0) > prev.get("eval_rewards/margins", 0)
        run = run + 1 if loss_up and margin_up else 0
        if run >= EVAL_RISES:
            return f"eval loss rose {run} evaluations in a row while eval margins rose (overfitting)"
    return None
