"""Reading a sweep's records from trials/<name>/: what Ray wrote per trial plus our sweep.json.

Layout (Ray's storage, one folder per trial):
    trials/<name>/sweep.json                       spec, hashes, versions, host, times (written by launch)
    trials/<name>/<trial>/params.json              {"params": {swept values}}
    trials/<name>/<trial>/result.json              one JSON object per reported result
    trials/<name>/<trial>/error.txt                present when the trial failed
    trials/<name>/<trial>/checkpoint_000000/       the trained LoRA adapter
    trials/<name>/<trial>/pruned.json              written by the pruning scheduler when it stopped the trial
    trials/<name>/<trial>/attempts.json            out-of-memory attempts of the trial (oom: retry_halved)
    trials/<name>/infeasible.json                  configs left out by the preflight or out of memory at batch 1
    trials/<name>/<trial>/evaluation.json          held-out evaluation of the trial (run/evalrun), or why skipped
    trials/<name>/evaluation_base.json             the same for the base model(s): row zero of the comparison

Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import TrialsError

SWEEP_FILE = "sweep.json"
PRUNED_FILE = "pruned.json"
ATTEMPTS_FILE = "attempts.json"
EVALUATION_FILE = "evaluation.json"
BASE_EVALUATION_FILE = "evaluation_base.json"
DONE = "sweeper/done"
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
    # pruned.json: {"step", "examples_seen", "value", "reason", "saved_examples", "saved_s"}
    pruned: dict[str, Any] | None = None
    # attempts.json: one entry per attempt, e.g. {"per_device_train_batch_size", "gradient_accumulation_steps",
    # "status": "oom" | "completed", "step"}; empty when the first attempt ran through
    attempts: list[dict[str, Any]] = field(default_factory=list)
    # evaluation.json: {"status": "evaluated" | "skipped" | "error", "reason", "preference", "multiple_choice", ...}
    evaluation: dict[str, Any] | None = None

    def value(self, metric: str) -> float | None:
        """The trial's last reported value of a metric."""
        for row in reversed([*self.curve, self.final]):
            if isinstance(row.get(metric), int | float):
                return float(row[metric])
        return None


@dataclass
class SweepRecord:
    path: Path
    meta: dict[str, Any]
    trials: list[TrialRecord]
    # evaluation_base.json: one record per base model (usually one), shaped like TrialRecord.evaluation
    base_evaluation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.path.name))

    def by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        return counts


def json_text(data: Any) -> str:
    """How sweeper writes its JSON records, to a local file or to a storage URI."""
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_text(data), encoding="utf-8")
    tmp.replace(path)


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
    curve = [r for r in results if not r.get(DONE) and not r.get("sweeper/oom")]
    last_attempt = max((r.get("sweeper/attempt", 1) for r in curve), default=1)
    curve = [r for r in curve if r.get("sweeper/attempt", 1) == last_attempt]
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
        evaluation=read_json(path / EVALUATION_FILE),
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
    ``training_iteration`` starts again at 1; after a resume it goes on counting)."""
    start = 0
    for i in range(1, len(results)):
        now, before = results[i], results[i - 1]
        process = (now.get("node_ip"), now.get("pid")) != (before.get("node_ip"), before.get("pid"))
        iteration, last = now.get("training_iteration"), before.get("training_iteration")
        restarted = isinstance(iteration, int) and isinstance(last, int) and iteration <= last
        if (process and now.get("pid") is not None and before.get("pid") is not None) or restarted:
            start = i
    return results[start:]


def read_json(path: Path) -> Any:
    """A small JSON record, or None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


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
