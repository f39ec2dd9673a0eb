"""cluster/a100.yaml is a config Ray's launcher accepts; retries and storage helpers (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweeper.config.spec import parse_spec
from sweeper.tune.cluster import copy_from_storage, experiment_path, max_failures

from ..conftest import ROOT

CONFIG = ROOT / "cluster" / "a100.yaml"


def spec_with(**sections: dict) -> object:
    return parse_spec({"name": "lr", "model": {"name_or_path": "m"}, "data": {"path": "d"}, **sections})


def test_ray_up_accepts_the_a100_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(CONFIG.read_text()))  # fills the AWS defaults, as `ray up` does
    validate_config(config)  # Ray's own schema check
    nodes = config["available_node_types"]
    assert nodes["head"]["resources"] == {"CPU": 0}  # the head drives, trials go to GPU nodes
    assert nodes["a100"]["node_config"]["InstanceType"] == "p4de.24xlarge"  # 8 x A100 80 GB


def test_install_steps_put_a_cuda_torch_before_sweeper() -> None:
    steps = yaml.safe_load(CONFIG.read_text())["setup_commands"]
    torch = next(i for i, s in enumerate(steps) if "torch==" in s)
    assert "download.pytorch.org/whl/cu" in steps[torch]
    assert torch < next(i for i, s in enumerate(steps) if "-e ~/sweeper" in s)


def test_the_config_binds_the_dashboard_to_loopback_and_holds_no_secret() -> None:
    text = CONFIG.read_text()
    assert "--dashboard-host=127.0.0.1" in text and "0.0.0.0" not in text
    for word in ("aws_secret_access_key", "api_token", "NEPTUNE_API_TOKEN=", "HF_TOKEN="):
        assert word not in text


def test_retries_default_to_two_on_a_cluster_and_none_locally() -> None:
    spec = spec_with()
    assert max_failures(spec, "auto") == 2 and max_failures(spec, None) == 0
    assert max_failures(spec_with(resources={"max_failures": 5}), None) == 5


def test_experiment_path_follows_output_storage(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "trials" / "lr"
    assert experiment_path(spec_with(), sweep_dir) == str(sweep_dir.resolve())
    assert experiment_path(spec_with(output={"storage": "s3://bucket/sweeps/"}), sweep_dir) == "s3://bucket/sweeps/lr"
    shared = spec_with(output={"storage": str(tmp_path / "nfs")})
    assert experiment_path(shared, sweep_dir) == str(tmp_path / "nfs" / "lr")


@pytest.mark.parametrize("uri", [False, True], ids=["shared-folder", "uri"])
def test_trials_come_back_from_storage(tmp_path: Path, uri: bool) -> None:
    remote = tmp_path / "bucket" / "lr" / "abc_00000--lr=0.001"
    remote.mkdir(parents=True)
    (remote / "result.json").write_text(json.dumps({"training_iteration": 1}) + "\n")
    (remote / "params.json").write_text(json.dumps({"params": {"learning_rate": 1e-3}}))
    storage = f"file://{tmp_path / 'bucket'}" if uri else str(tmp_path / "bucket")
    spec = spec_with(output={"storage": storage})
    sweep_dir = tmp_path / "trials" / "lr"
    sweep_dir.mkdir(parents=True)
    assert copy_from_storage(spec, sweep_dir) == 2
    assert (sweep_dir / "abc_00000--lr=0.001" / "result.json").read_text() == (remote / "result.json").read_text()
    assert copy_from_storage(spec, sweep_dir) == 0  # already there: nothing copied twice
    assert copy_from_storage(spec_with(), sweep_dir) == 0  # no storage: the trials are already in place
