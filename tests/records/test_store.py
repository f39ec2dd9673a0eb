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
