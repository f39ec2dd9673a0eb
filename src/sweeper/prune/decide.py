"""The pruning decision after one result, as a pure function: the Ray scheduler asks it, tests feed it by hand.

Light module: no ray (the gate holds the Optuna study).
"""

from __future__ import annotations

from typing import Any

from sweeper.prune.gate import PruningGate
from sweeper.prune.guard import is_flagged
from sweeper.records.metrics import ELAPSED_S, EXAMPLES_SEEN, STEP, TOKENS_SEEN
from sweeper.records.schema import PrunedRecord


def stop_reason(gate: PruningGate, trial_id: str, step: int, value: Any, *, verdict: str | None = None,
                guard: str = "off", at_end: bool = False, why: str = "pruner") -> str | None:  # fmt: skip
    """Why the trial should stop after reporting ``value`` at ``step``, or None to let it go on.

    ``guard: prune`` stops a trial the margin-hacking guard flags; otherwise the gate (the sweep's pruner) is
    asked. A trial at its last log (``at_end``) is never stopped: it finishes and counts as completed.
    """
    if guard == "prune" and is_flagged(verdict) and not at_end:
        return f"margin-hacking guard: {verdict}"
    if isinstance(value, int | float) and gate.report(trial_id, int(step), float(value)) and not at_end:
        return why
    return None


def pruned_record(result: dict[str, Any], planned: int, value: Any, reason: str) -> PrunedRecord:
    """pruned.json: where a trial was stopped and the compute it did not spend (at its own rate so far)."""
    seen = int(result.get(EXAMPLES_SEEN) or 0)
    elapsed = float(result.get(ELAPSED_S) or 0.0)
    saved = max(0, planned - seen)
    return PrunedRecord(
        step=result.get(STEP),
        examples_seen=seen,
        tokens_seen=result.get(TOKENS_SEEN),
        value=value,
        reason=reason,
        planned_examples=planned,
        saved_examples=saved,
        saved_s=round(saved * elapsed / seen, 1) if seen else None,
    )
