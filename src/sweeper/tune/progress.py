"""Progress lines of a running sweep: one per trial start, logged result, end, pruning and error.

Fed by the Ray Tune callback in raytune.py (Ray's own table is off). Light module: imports neither torch
nor ray.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sweeper.plan.space import label
from sweeper.records.metrics import ATTEMPT, DONE, OOM, PER_DEVICE_TRAIN_BATCH_SIZE


class ProgressPrinter:
    """One line per trial result, start, end and error (Ray's own table is off)."""

    def __init__(self, names: list[str], n_planned: int, metric: str, experiment: str,
                 stream: Any = None) -> None:  # fmt: skip
        self.names = names
        self.n_planned = n_planned
        self.metric = metric
        self.experiment = experiment  # where Ray keeps the trials: pruned.json is read there
        self.index: dict[str, int] = {}
        self.stream = stream or sys.stdout

    def _tag(self, trial: Any) -> str:
        n = self.index.setdefault(trial.trial_id, len(self.index) + 1)
        return f"[{n}/{self.n_planned} {label(trial.config.get('params', {}), self.names)}]"

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, trial: Any) -> None:
        self.say(f"{self._tag(trial)} started ({trial.trial_id})")

    def resumed(self, trial: Any) -> None:
        self.say(f"{self._tag(trial)} resumed from its checkpoint ({trial.trial_id})")

    def result(self, trial: Any, result: dict[str, Any]) -> None:
        if result.get(OOM):
            self.say(f"{self._tag(trial)} out of memory at every per-device batch tried "
                     f"({result.get('sweeper/attempt')} attempt(s)): status oom")  # fmt: skip
            return
        if result.get(DONE):
            value = result.get(self.metric)
            self.say(f"{self._tag(trial)} completed: {self.metric} {num(value)} after "
                     f"{result.get('sweeper/step')} steps in {num(result.get('sweeper/elapsed_s'))} s")  # fmt: skip
            return
        parts = [f"step {result.get('sweeper/step')}", f"{result.get('sweeper/examples_seen')} ex"]
        if (result.get(ATTEMPT) or 1) > 1:  # a retry after running out of memory
            batch = result.get(PER_DEVICE_TRAIN_BATCH_SIZE)
            parts.insert(0, f"attempt {result['sweeper/attempt']} bs {batch}")
        for key, short in (("rewards/margins", "margins"), ("rewards/accuracies", "acc"), ("loss", "loss"),
                           ("eval_rewards/margins", "eval margins"), ("eval_loss", "eval loss")):  # fmt: skip
            if key in result:
                parts.append(f"{short} {num(result[key])}")
        parts.append(f"{num(result.get('sweeper/elapsed_s'))} s")
        self.say(f"{self._tag(trial)} " + " · ".join(parts))

    def pruned(self, trial: Any) -> None:
        from sweeper.records.storage import read_record, trial_record
        from sweeper.records.store import PRUNED_FILE

        record = read_record(trial_record(self.experiment, trial.path, PRUNED_FILE))
        if record:
            self.say(f"{self._tag(trial)} pruned at {record['examples_seen']} examples "
                     f"({self.metric} {num(record['value'])}): {record['reason']}; "
                     f"saved {record['saved_examples']} examples")  # fmt: skip

    def error(self, trial: Any) -> None:
        where = Path(trial.local_path or trial.path or "") / "error.txt"
        self.say(f"{self._tag(trial)} ERROR: the trial failed; traceback in {where}")


def num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
