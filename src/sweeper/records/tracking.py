"""Experiment trackers: a local JSONL log (always on) and Neptune (optional, ``tracking: {neptune: ...}``).

Trackers run in the driver, fed by the Ray Tune callback in raytune.py with the results trials already
report (every logging step's TRL metrics, examples seen, memory peaks): nothing is installed or configured on
worker nodes, the API token never leaves the driver's environment, and a tracker that fails can only lose
its own records: every call goes through ``Trackers``, which turns an exception into one warning and switches
that tracker off. The trial never sees it.

The interface is four calls: ``start_trial(trial_id, params)``, ``log(trial_id, metrics)``,
``end_trial(trial_id, status)`` and ``sweep(summary, report)`` (a sweep-level record with the report).
Light module: imports neither torch nor ray; neptune only when a Neptune tracker starts a run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from sweeper.errors import SweeperError, first_line
from sweeper.records.metrics import STATUS, SWEEP, TRIAL_ID

LOCAL_FILE = "tracking.jsonl"
NEPTUNE_DIR = "neptune"
TOKEN_ENV = "NEPTUNE_API_TOKEN"  # the only place a token comes from; never stored, never passed on


class Tracker(Protocol):
    name: str

    def start_trial(self, trial_id: str, params: dict[str, Any]) -> None: ...

    def log(self, trial_id: str, metrics: dict[str, Any]) -> None: ...

    def end_trial(self, trial_id: str, status: str) -> None: ...

    def sweep(self, summary: dict[str, Any], report: Path | None) -> None: ...

    def close(self) -> None: ...


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a result (Ray adds strings, dicts and timestamps we do not track)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}  # fmt: skip


class LocalTracker:
    """One JSON line per event in trials/<name>/tracking.jsonl: trial start (params), each result, end, sweep."""

    name = "local"

    def __init__(self, sweep_dir: str | Path, sweep_name: str) -> None:
        self.path = Path(sweep_dir) / LOCAL_FILE
        self.sweep_name = sweep_name

    def _write(self, event: str, **fields: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {"event": event, "sweep": self.sweep_name, "time": round(time.time(), 3), **fields}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")

    def start_trial(self, trial_id: str, params: dict[str, Any]) -> None:
        self._write("start", trial_id=trial_id, params=params)

    def log(self, trial_id: str, metrics: dict[str, Any]) -> None:
        self._write("result", trial_id=trial_id, metrics=numeric(metrics))

    def end_trial(self, trial_id: str, status: str) -> None:
        self._write("end", trial_id=trial_id, status=status)

    def sweep(self, summary: dict[str, Any], report: Path | None) -> None:
        self._write("sweep", summary=summary, report=str(report) if report else None)

    def close(self) -> None:
        pass


def neptune_mode(mode: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, str | None]:
    """The mode to run Neptune in, and a note when it differs from the spec's (no token: offline)."""
    if mode == "async" and not environ.get(TOKEN_ENV):
        return "offline", f"{TOKEN_ENV} is not set: Neptune logs offline"
    return mode, None


class NeptuneTracker:
    """One Neptune run per trial (tagged with the sweep's name) and one for the sweep, through neptune 1.x.

    The token is read by neptune itself from NEPTUNE_API_TOKEN: this object never holds it (it is pickled
    into Ray's tuner.pkl with the callback). Offline runs go to trials/<name>/neptune; ``neptune sync --path
    trials/<name>/neptune`` uploads them later.
    """

    name = "neptune"

    def __init__(self, project: str, mode: str, sweep_dir: str | Path, sweep_name: str, tags: list[str]) -> None:
        self.project = project
        self.mode = mode
        self.data_dir = str(Path(sweep_dir).resolve() / NEPTUNE_DIR)
        self.sweep_name = sweep_name
        self.tags = [sweep_name, *tags]
        self.runs: dict[str, Any] = {}
        self.steps: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runs": {}}  # open runs stay in the process that opened them

    def _init_run(self, name: str, tags: list[str]) -> Any:
        os.environ["NEPTUNE_DATA_DIRECTORY"] = self.data_dir  # where offline and async runs keep their files
        import logging

        import neptune

        logging.getLogger("neptune").setLevel(logging.WARNING)  # no "Neptune initialized" line per trial

        mode, _ = neptune_mode(self.mode)
        return neptune.init_run(
            project=self.project, mode=mode, name=name, tags=tags,
            capture_stdout=False, capture_stderr=False, capture_hardware_metrics=False, capture_traceback=False,
            source_files=[], git_ref=False,
        )  # fmt: skip

    def start_trial(self, trial_id: str, params: dict[str, Any]) -> None:
        from neptune.utils import stringify_unsupported

        run = self._init_run(f"{self.sweep_name}/{trial_id}", self.tags)
        run[SWEEP] = self.sweep_name
        run[TRIAL_ID] = trial_id
        run["parameters"] = stringify_unsupported(params)
        self.runs[trial_id] = run
        self.steps[trial_id] = 0

    def log(self, trial_id: str, metrics: dict[str, Any]) -> None:
        run = self.runs.get(trial_id)
        if run is None:
            return
        step = self.steps[trial_id] = self.steps.get(trial_id, 0) + 1  # monotonic even when a trial restarts
        for key, value in numeric(metrics).items():
            if key.startswith(("sweeper/", "rewards/", "logps/", "logits/", "eval_")) or "/" not in key:
                run[f"metrics/{key}"].append(value, step=step)
            if (key.endswith("_mb") and "peak" in key) or key.startswith("sweeper/cuda_max"):
                run[f"memory/{key.removeprefix('sweeper/')}"] = value  # peaks only grow: the last is the peak

    def end_trial(self, trial_id: str, status: str) -> None:
        run = self.runs.pop(trial_id, None)
        if run is not None:
            run[STATUS] = status
            run.stop()

    def sweep(self, summary: dict[str, Any], report: Path | None) -> None:
        from neptune.utils import stringify_unsupported

        run = self._init_run(f"{self.sweep_name} (sweep)", [*self.tags, "sweep"])
        run[SWEEP] = self.sweep_name
        run["summary"] = stringify_unsupported(summary)
        if report is not None and Path(report).is_file():
            run["report"].upload(str(report))
            run["report_text"] = Path(report).read_text(encoding="utf-8")[:100_000]
        run.stop()

    def close(self) -> None:
        for trial_id in list(self.runs):
            self.end_trial(trial_id, "unfinished")


class Trackers:
    """Every tracker of a sweep behind one guard: an exception is one warning and that tracker is switched off."""

    def __init__(self, trackers: list[Any], stream: TextIO | None = None) -> None:
        self.trackers = trackers
        self.stream = stream
        self.broken: set[str] = set()

    def _call(self, method: str, *args: Any) -> None:
        for tracker in self.trackers:
            if tracker.name in self.broken:
                continue
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # a tracker never fails a trial or the sweep
                self.broken.add(tracker.name)
                first = first_line(exc)
                print(f"WARNING: tracker '{tracker.name}' failed in {method} ({type(exc).__name__}: {first}); "
                      "the sweep goes on without it", file=self.stream or sys.stderr, flush=True)  # fmt: skip

    def start_trial(self, trial_id: str, params: dict[str, Any]) -> None:
        self._call("start_trial", trial_id, params)

    def log(self, trial_id: str, metrics: dict[str, Any]) -> None:
        self._call("log", trial_id, metrics)

    def end_trial(self, trial_id: str, status: str) -> None:
        self._call("end_trial", trial_id, status)

    def sweep(self, summary: dict[str, Any], report: Path | None) -> None:
        self._call("sweep", summary, report)

    def close(self) -> None:
        self._call("close")


def trackers_for(spec: Any, sweep_dir: str | Path) -> Trackers:
    """The local tracker, plus Neptune when the spec asks for it."""
    found: list[Any] = [LocalTracker(sweep_dir, spec.name)]
    neptune = spec.tracking.neptune
    if neptune is not None:
        found.append(NeptuneTracker(neptune.project, neptune.mode, sweep_dir, spec.name, list(neptune.tags)))
    return Trackers(found)


def check_tracking(spec: Any) -> list[str]:
    """Before anything runs: the extra is installed; lines saying where Neptune logs. SweeperError otherwise."""
    neptune = spec.tracking.neptune
    if neptune is None:
        return []
    import importlib.util

    if importlib.util.find_spec("neptune") is None:
        raise SweeperError("tracking.neptune: the neptune client is not installed: pip install 'sweeper[neptune]' "
                           "(neptune 1.x), or remove tracking.neptune from the spec")  # fmt: skip
    mode, note = neptune_mode(neptune.mode)
    where = f"{NEPTUNE_DIR}/ under the sweep's trials folder" if mode == "offline" else f"project {neptune.project}"
    line = f"Tracking: Neptune ({mode}) to {where}, one run per trial tagged '{spec.name}', plus a sweep run"
    return [line + (f"; {note} (set {TOKEN_ENV} to stream; `neptune sync` uploads offline runs)" if note else "")]
