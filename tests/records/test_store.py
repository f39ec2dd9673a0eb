"""Reading a sweep's records: self-contained trial settings, records of the last release, corrupt files named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sweeper.errors import TrialsError
from sweeper.records import SETTINGS_FILE, load_sweep, write_json

from ..conftest import FIXTURES

SMOKE = FIXTURES / "trials" / "smoke"


def copy_smoke(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SMOKE, tmp_path / "smoke"))


def test_records_of_the_last_release_load_with_their_settings_rebuilt_from_the_recorded_spec() -> None:
    sweep = load_sweep(SMOKE)  # written before trials recorded settings.json
    assert len(sweep.trials) == 4
    spec = sweep.meta["spec"]
    for t in sweep.trials:
        assert t.settings is not None
        assert t.training("learning_rate") == t.params["learning_rate"]  # the swept value
        assert t.training("gradient_accumulation_steps") == t.params["gradient_accumulation_steps"]
        assert t.training("per_device_train_batch_size") == spec["training"]["per_device_train_batch_size"]  # fixed
        assert t.settings["model"]["quantization"] == spec["model"]["quantization"]


def test_a_trials_own_settings_json_is_what_the_record_says(tmp_path: Path) -> None:
    sweep_dir = copy_smoke(tmp_path)
    trial = sorted(p for p in sweep_dir.iterdir() if p.is_dir())[0]
    own = {"model": {"quantization": "8bit"}, "data": {"max_length": 64},
           "training": {"learning_rate": 0.5, "per_device_train_batch_size": 3}}  # fmt: skip
    write_json(trial / SETTINGS_FILE, own)
    t = next(t for t in load_sweep(sweep_dir).trials if t.path == trial)
    assert t.settings == own and t.training("learning_rate") == 0.5  # not re-derived from the spec


@pytest.mark.parametrize("name", ["pruned.json", "attempts.json", "evaluation.json", SETTINGS_FILE])
def test_a_corrupt_record_is_an_error_naming_the_file(tmp_path: Path, name: str) -> None:
    sweep_dir = copy_smoke(tmp_path)
    trial = sorted(p for p in sweep_dir.iterdir() if p.is_dir())[1]
    (trial / name).write_text('{"step": 4, "exa')  # cut off: not JSON
    with pytest.raises(TrialsError, match=rf"{trial / name}: corrupt record \(JSONDecodeError"):
        load_sweep(sweep_dir)


def test_a_corrupt_sweep_json_is_an_error_naming_the_file(tmp_path: Path) -> None:
    sweep_dir = copy_smoke(tmp_path)
    (sweep_dir / "sweep.json").write_text(json.dumps({"name": "smoke"})[:-3])
    with pytest.raises(TrialsError, match="sweep.json: unreadable JSON"):
        load_sweep(sweep_dir)


def test_a_paused_trial_that_resumed_is_one_run_with_its_events(tmp_path: Path) -> None:
    from sweeper.records.store import EVENTS_FILE, last_run

    before = [{"pid": 1, "training_iteration": i, "sweeper/step": 2 * i} for i in (1, 2, 3)]
    # resumed in a new worker from the checkpoint of its third result: Ray counts on from the checkpoint's iteration
    after = [{"pid": 2, "training_iteration": i, "sweeper/step": 2 * i, "sweeper/resumed_at_step": 6} for i in (4, 5)]
    assert last_run(before + after) == before + after  # a continuation, not a rerun
    rerun = [{"pid": 3, "training_iteration": 1, "sweeper/step": 2}]
    assert last_run(before + after + rerun) == rerun  # a rerun from scratch still starts a new run

    sweep = copy_smoke(tmp_path)
    trial = next(d for d in sorted(sweep.iterdir()) if (d / "params.json").is_file())
    events = [{"event": "paused", "examples_seen": 24}, {"event": "resumed", "examples_seen": 24}]
    write_json(trial / EVENTS_FILE, events)
    loaded = {t.path.name: t for t in load_sweep(sweep).trials}
    assert loaded[trial.name].events == events
    assert all(t.events == [] for name, t in loaded.items() if name != trial.name)  # never paused
