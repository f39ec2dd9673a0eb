"""A sweep's records on disk (trials/<name>/): one schema for the files sweeper writes and reads back.

Light layer, the lowest of sweeper's: it imports no other layer.
"""

from __future__ import annotations

from sweeper.records.heldout import PairLogps, answer_stats, choice_metrics, generation_metrics, preference_metrics
from sweeper.records.refcache import Logps, signature
from sweeper.records.schema import (
    AttemptRow,
    EvaluationRecord,
    InfeasibleRow,
    PrunedRecord,
    SweepMeta,
    TrialSettingsRecord,
)
from sweeper.records.storage import is_uri, join, read_record, trial_record, write_record
from sweeper.records.store import (
    ATTEMPTS_FILE,
    BASE_EVALUATION_FILE,
    EVALUATION_FILE,
    PRUNED_FILE,
    SETTINGS_FILE,
    STATUSES,
    SWEEP_FILE,
    SweepRecord,
    TrialRecord,
    best_trial,
    load_sweep,
    read_json,
    write_json,
)
from sweeper.records.tracking import check_tracking, trackers_for

__all__ = [
    "AttemptRow",
    "EvaluationRecord",
    "InfeasibleRow",
    "PrunedRecord",
    "SweepMeta",
    "TrialSettingsRecord",
    "ATTEMPTS_FILE",
    "BASE_EVALUATION_FILE",
    "EVALUATION_FILE",
    "Logps",
    "PRUNED_FILE",
    "SETTINGS_FILE",
    "PairLogps",
    "STATUSES",
    "SWEEP_FILE",
    "SweepRecord",
    "TrialRecord",
    "answer_stats",
    "best_trial",
    "check_tracking",
    "choice_metrics",
    "generation_metrics",
    "is_uri",
    "join",
    "load_sweep",
    "preference_metrics",
    "read_json",
    "read_record",
    "signature",
    "trackers_for",
    "trial_record",
    "write_json",
    "write_record",
]
