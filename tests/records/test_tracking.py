"""Trackers: the local JSONL always on, Neptune in offline mode (no server), and a failing tracker never fails."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from sweeper.config.spec import parse_spec
from sweeper.errors import SweeperError
from sweeper.records.tracking import (
    LOCAL_FILE,
    NEPTUNE_DIR,
    LocalTracker,
    NeptuneTracker,
    Trackers,
    check_tracking,
    neptune_mode,
    trackers_for,
)

RESULT = {"rewards/margins": 0.5, "loss": 0.6, "sweeper/peak_rss_mb": 690.0, "sweeper/step": 2,
          "trial_id": "abc_00000", "date": "2026-11-25", "config": {"params": {}}, "done": False}  # fmt: skip


def spec_with(tracking: dict[str, Any]) -> Any:
    return parse_spec({"name": "trk", "model": {"name_or_path": "m"}, "data": {"path": "d"}, "tracking": tracking})


def neptune_operations(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every operation of every offline Neptune run under sweep_dir, with its run folder."""
    ops = []
    for log in sorted((sweep_dir / NEPTUNE_DIR / "offline").glob("run__*/data-*.log")):
        for line in log.read_text().splitlines():
            if line.strip():
                ops.append({**json.loads(line)["obj"], "run": log.parent.name})
    return ops


def test_the_local_tracker_writes_one_line_per_event(tmp_path: Path) -> None:
    local = LocalTracker(tmp_path, "trk")
    local.start_trial("abc_00000", {"learning_rate": 1e-3})
    local.log("abc_00000", RESULT)
    local.end_trial("abc_00000", "completed")
    local.sweep({"statuses": {"completed": 1}}, None)
    rows = [json.loads(line) for line in (tmp_path / LOCAL_FILE).read_text().splitlines()]
    assert [r["event"] for r in rows] == ["start", "result", "end", "sweep"]
    assert rows[0]["params"] == {"learning_rate": 1e-3}
    assert rows[1]["metrics"] == {
        "rewards/margins": 0.5,
        "loss": 0.6,
        "sweeper/peak_rss_mb": 690.0,
        "sweeper/step": 2.0,
    }  # numbers only: Ray's strings and dicts are left out
    assert all(r["sweep"] == "trk" for r in rows)


def test_the_local_tracker_is_always_on() -> None:
    assert [t.name for t in trackers_for(spec_with({}), "x").trackers] == ["local"]
    both = trackers_for(spec_with({"neptune": {"project": "team/dpo", "mode": "offline"}}), "x")
    assert [t.name for t in both.trackers] == ["local", "neptune"]


class Exploding:
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def start_trial(self, *args: Any) -> None:
        self.calls += 1
        raise ConnectionError("neptune.ai: 503 Service Unavailable\nmore detail")

    log = end_trial = sweep = close = start_trial


def test_a_failing_tracker_warns_once_and_the_others_go_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, local = Exploding(), LocalTracker(tmp_path, "trk")
    trackers = Trackers([bad, local])
    trackers.start_trial("abc_00000", {})  # no exception reaches the caller (the Ray callback, so the trial)
    trackers.log("abc_00000", RESULT)
    trackers.end_trial("abc_00000", "completed")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["WARNING: tracker 'exploding' failed in start_trial (ConnectionError: neptune.ai: 503 Service "
                   "Unavailable); the sweep goes on without it"]  # fmt: skip
    assert bad.calls == 1  # switched off after its first failure
    assert len((tmp_path / LOCAL_FILE).read_text().splitlines()) == 3


def test_no_token_means_offline_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    assert neptune_mode("async", {}) == ("offline", "NEPTUNE_API_TOKEN is not set: Neptune logs offline")
    assert neptune_mode("async", {"NEPTUNE_API_TOKEN": "x"}) == ("async", None)
    assert neptune_mode("debug", {}) == ("debug", None)
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    pytest.importorskip("neptune")
    (line,) = check_tracking(spec_with({"neptune": {"project": "team/dpo"}}))
    assert "Neptune (offline)" in line and "NEPTUNE_API_TOKEN is not set" in line


def test_without_the_neptune_extra_launch_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "neptune" else real(name, *a))
    with pytest.raises(SweeperError, match=r"pip install 'sweeper\[neptune\]'"):
        check_tracking(spec_with({"neptune": {"project": "team/dpo"}}))


def test_neptune_offline_runs_per_trial_and_for_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune")
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    trackers = Trackers([NeptuneTracker("team/dpo", "async", tmp_path, "trk", ["qlora"])])
    for trial in ("abc_00000", "abc_00001"):
        trackers.start_trial(trial, {"learning_rate": 1e-3, "gradient_accumulation_steps": 2})
        for step in (1, 2):
            trackers.log(trial, {**RESULT, "sweeper/step": step, "sweeper/peak_rss_mb": 600.0 + step})
        trackers.end_trial(trial, "completed")
    report = tmp_path / "trk.md"
    report.write_text("# Sweep trk\n")
    trackers.sweep({"statuses": {"completed": 2}}, report)
    assert not trackers.broken
    ops = neptune_operations(tmp_path)
    runs = {op["run"] for op in ops}
    assert len(runs) == 3  # one per trial, one for the sweep
    names = {op["value"] for op in ops if op["path"] == ["sys", "name"]}
    assert names == {"trk/abc_00000", "trk/abc_00001", "trk (sweep)"}
    tags = [op["values"] for op in ops if op["path"] == ["sys", "tags"]]
    assert all("trk" in t for t in tags) and any("sweep" in t for t in tags)
    paths = {"/".join(op["path"]) for op in ops}
    assert {"parameters/learning_rate", "metrics/rewards/margins", "metrics/sweeper/peak_rss_mb",
            "memory/peak_rss_mb", "sweeper/status", "report", "report_text"} <= paths  # fmt: skip
    margins = [v["value"] for op in ops if op["path"] == ["metrics", "rewards", "margins"] for v in op["values"]]
    assert margins == [0.5] * 4  # every logged step of both trials


def test_a_neptune_failure_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    neptune = pytest.importorskip("neptune")

    def refuse(**kw: Any) -> None:
        raise RuntimeError("NeptuneConnectionLostException: the service is closed")

    monkeypatch.setattr(neptune, "init_run", refuse)
    trackers = Trackers([NeptuneTracker("team/dpo", "async", tmp_path, "trk", [])])
    trackers.start_trial("abc_00000", {})
    trackers.log("abc_00000", RESULT)
    trackers.sweep({}, None)
    assert "tracker 'neptune' failed in start_trial" in capsys.readouterr().err


def test_the_tracker_pickled_into_tuner_pkl_holds_no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "sk-test-PLANTED-pickle")
    tracker = NeptuneTracker("team/dpo", "offline", tmp_path, "trk", [])
    tracker.runs["abc_00000"] = object()  # an open run (unpicklable in real life) is not carried over
    data = pickle.dumps(tracker)
    assert b"PLANTED" not in data
    assert pickle.loads(data).runs == {}
