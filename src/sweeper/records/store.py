"""Reading a sweep's records from trials/<name>/: what Ray wrote per trial plus our sweep.json.

Layout (Ray's storage, one folder per trial):
    trials/<name>/sweep.json                       spec, hashes, versions, host, times (written by launch)
    trials/<name>/<trial>/params.json              {"params": {swept values}}
    trials/<name>/<trial>/result.json              one JSON object per reported result
    trials/<name>/<trial>/error.txt                present when the trial failed
    trials/<name>/<trial>/checkpoint_000000/       the trained LoRA adapter
    trials/<name>/<trial>/pruned.json              written by the pruning scheduler when it stopped the trial
    trials/<name>/<trial>/attempts.json            out-of-memory attempts of the trial (oom: retry_halved)
    trials/<name>/<trial>/events.json              paused / resumed / pruned, with examples seen (on_prune: pause)
    trials/<name>/infeasible.json                  configs left out by the preflight or out of memory at batch 1
    trials/<name>/<trial>/evaluation.json          held-out evaluation of the trial (run/evalrun), or why skipped
    trials/<name>/evaluation_base.json             the same for the base model(s): row zero of the comparison

Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import TrialsError, first_line
from sweeper.records.files import write_text_atomic
from sweeper.records.legacy import legacy_settings
from sweeper.records.metrics import ATTEMPT, DONE, OOM, RESUMED_AT_STEP
from sweeper.records.schema import AttemptRow, EvaluationRecord, PrunedRecord, SweepMeta, TrialSettingsRecord

SWEEP_FILE = "sweep.json"
PRUNED_FILE = "pruned.json"
ATTEMPTS_FILE = "attempts.json"
EVENTS_FILE = "events.json"  # paused / resumed / pruned, with the examples seen at each (on_prune: pause)
EVALUATION_FILE = "evaluation.json"
SETTINGS_FILE = "settings.json"  # the trial's resolved model/data/training settings (plan.TrialSettings.as_dict)
BASE_EVALUATION_FILE = "evaluation_base.json"
STATUSES = ("completed", "pruned", "oom", "error", "unfinished")


@dataclass
class TrialRecord:
    trial_id: str
    path: Path
    params: dict[str, Any]
    status: str  # one of STATUSES
    curve: list[dict[str, Any]] = field(default_factory=list)  # every logged step, in order
    final: dict[str, Any] = field(default_factory=dict)  # the last result (the final summary when completed)
    error: str | None = None
    adapter: Path | None = None  # the trained LoRA adapter (the trial's last checkpoint)
    pruned: PrunedRecord | None = None  # pruned.json
    attempts: list[AttemptRow] = field(default_factory=list)  # attempts.json; empty when the first attempt fit
    # events.json (on_prune: pause): [{"event": "paused" | "resumed" | "pruned", "examples_seen", "step", "value",
    # "reason", "time"}]; empty when the trial was never paused
    events: list[dict[str, Any]] = field(default_factory=list)
    evaluation: EvaluationRecord | None = None  # evaluation.json
    # settings.json: {"model": {...}, "data": {...}, "training": {...}} as the trial resolved them (load_sweep
    # rebuilds them for records written before it existed; None when even the sweep's spec is missing)
    settings: TrialSettingsRecord | None = None

    def training(self, name: str) -> Any:
        """One of the trial's training settings (``learning_rate``, ``beta``, ...), or None when unknown."""
        return ((self.settings or {}).get("training") or {}).get(name)

    def value(self, metric: str) -> float | None:
        """The trial's last reported value of a metric."""
        for row in reversed([*self.curve, self.final]):
            if isinstance(row.get(metric), int | float):
                return float(row[metric])
        return None


@dataclass
class SweepRecord:
    path: Path
    meta: SweepMeta
    trials: list[TrialRecord]
    # evaluation_base.json: one record per base model (usually one), shaped like TrialRecord.evaluation
    base_evaluation: list[EvaluationRecord] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    def by_status(self) -> dict[str, int]:
        return dict(Counter(t.status for t in self.trials))


def json_text(data: Any) -> str:
    """How sweeper writes its JSON records, to a local file or to a storage URI."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    write_text_atomic(path, json_text(data))


def load_sweep(path: str | Path) -> SweepRecord:
    path = Path(path)
    meta_file = path / SWEEP_FILE
    if not meta_file.is_file():
        raise TrialsError(
            f"{path}: not a sweep folder ({SWEEP_FILE} is missing): "
            "pass trials/<sweep name> as written by 'python -m sweeper launch'"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrialsError(f"{meta_file}: unreadable JSON ({exc.msg}, line {exc.lineno})") from None
    trials = [load_trial(d) for d in sorted(path.iterdir()) if (d / "params.json").is_file()]
    for t in trials:  # records of releases before settings.json: rebuilt from the recorded spec
        if t.settings is None:
            t.settings = legacy_settings(meta.get("spec"), t.params)
    bases = read_json(path / BASE_EVALUATION_FILE)
    return SweepRecord(path=path, meta=meta, trials=trials, base_evaluation=bases if isinstance(bases, list) else [])


def load_trial(path: Path) -> TrialRecord:
    params = json.loads((path / "params.json").read_text(encoding="utf-8")).get("params", {})
    results = last_run(read_results(path / "result.json"))
    error_file = path / "error.txt"
    error = error_file.read_text(encoding="utf-8", errors="replace") if error_file.is_file() else None
    done = bool(results) and bool(results[-1].get(DONE))
    pruned = read_json(path / PRUNED_FILE)
    attempts = read_json(path / ATTEMPTS_FILE) or []
    status = trial_status(done, pruned is not None, bool(attempts) and attempts[-1].get("status") == "oom", error)
    # every logged step of the attempt that counts (the last one, after out-of-memory retries)
    curve = [r for r in results if not r.get(DONE) and not r.get(OOM)]
    last_attempt = max((r.get(ATTEMPT, 1) for r in curve), default=1)
    curve = [r for r in curve if r.get(ATTEMPT, 1) == last_attempt]
    # Ray writes the trial id into every result; folders are named <trial id>--<label>.
    trial_id = str(results[0]["trial_id"]) if results and "trial_id" in results[0] else path.name.split("--")[0]
    return TrialRecord(
        trial_id=trial_id,
        path=path,
        params=params,
        status=status,
        curve=curve,
        final=results[-1] if results else {},
        error=error,
        adapter=max(path.glob("checkpoint_*"), default=None),
        pruned=pruned,
        attempts=attempts,
        events=read_json(path / EVENTS_FILE) or [],
        evaluation=read_json(path / EVALUATION_FILE),
        settings=read_json(path / SETTINGS_FILE),
    )


def trial_status(done: bool, pruned: bool, oom: bool, error: str | None) -> str:
    if done:
        return "completed"
    if pruned:
        return "pruned"
    if oom:
        return "oom"
    return "error" if error is not None else "unfinished"


def last_run(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of the trial's last run. A trial rerun from scratch (its node died, `sweeper resume`) appends
    to the same result.json from a new worker process: Ray's ``pid``/``node_ip`` change (and after a node loss
    ``training_iteration`` starts again at 1; after a resume it goes on counting). A paused trial that resumed
    from its checkpoint (``sweeper/resumed_at_step`` on its results) continues its run: it is not a rerun."""
    start = 0
    for i in range(1, len(results)):
        now, before = results[i], results[i - 1]
        if now.get(RESUMED_AT_STEP) is not None and now.get(RESUMED_AT_STEP) != before.get(RESUMED_AT_STEP):
            continue
        process = (now.get("node_ip"), now.get("pid")) != (before.get("node_ip"), before.get("pid"))
        iteration, last = now.get("training_iteration"), before.get("training_iteration")
        restarted = isinstance(iteration, int) and isinstance(last, int) and iteration <= last
        if (process and now.get("pid") is not None and before.get("pid") is not None) or restarted:
            start = i
    return results[start:]


def read_json(path: Path) -> Any:
    """A small JSON record, or None when absent. A record that is there but not JSON is a TrialsError naming the
    file: sweeper writes its records atomically, so a broken one was damaged after the fact."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrialsError(
            f"{path}: corrupt record ({type(exc).__name__}: {first_line(exc)}): restore it from a "
            "copy or delete it (the trial then reads as if it had never been written)"
        ) from None


def read_results(path: Path) -> list[dict[str, Any]]:
    """Ray's result.json: one JSON object per line; a torn last line (crash mid-write) is ignored."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def best_trial(sweep: SweepRecord, metric: str, goal: str) -> TrialRecord | None:
    """The completed trial with the best last value of the metric."""
    scored = [(t.value(metric), t) for t in sweep.trials if t.status == "completed"]
    scored = [(v, t) for v, t in scored if v is not None]
    if not scored:
        return None
    pick = max if goal == "maximize" else min
    return pick(scored, key=lambda vt: vt[0])[1]
