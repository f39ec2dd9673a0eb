"""output.storage as an S3 URI: Ray keeps the trials in a bucket (a moto S3 server on 127.0.0.1 stands in for
AWS), sweeper's own files (attempts.json from the trial, pruned.json from the scheduler) go there beside Ray's,
and the end of the sweep copies everything back into trials/<name>."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sweeper.records.storage import join, read_record, trial_record, write_record
from sweeper.records.store import load_sweep

from ..conftest import ROOT

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on loopback with an empty bucket; yields the storage URI. Stopped by its PID."""
    import pyarrow.fs

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(CREDENTIALS)
        s3 = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                     allow_bucket_creation=True)  # fmt: skip
        s3.create_dir("bucket")
        yield f"s3://bucket/sweeps?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():  # the fake credentials stay in this module
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def listing(uri: str) -> list[str]:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(str(Path(i.path).relative_to(root)) for i in infos if i.type == pyarrow.fs.FileType.File)


def test_join_keeps_the_query_at_the_end() -> None:
    uri = "s3://b/sweeps/?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(uri, "lr", "t1") == "s3://b/sweeps/lr/t1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join("s3://b/sweeps", "lr") == "s3://b/sweeps/lr"
    assert join("/nfs/sweeps", "lr", "t1") == "/nfs/sweeps/lr/t1"
    # a trial's record sits in its folder in storage, whatever path names that folder (staging or storage)
    staging = "/tmp/ray/session_x/artifacts/exp/driver_artifacts/abc_00001--lr=0.003"
    assert (
        trial_record("s3://b/sweeps/lr?x=1", staging, "pruned.json")
        == "s3://b/sweeps/lr/abc_00001--lr=0.003/pruned.json?x=1"
    )


def test_records_round_trip_through_the_bucket(bucket: str, tmp_path: Path) -> None:
    location = trial_record(join(bucket, "unit"), "t_00000", "attempts.json")
    assert read_record(location) is None  # absent: None, as for a local file
    write_record(location, [{"attempt": 1, "status": "oom"}])
    assert read_record(location) == [{"attempt": 1, "status": "oom"}]
    assert "unit/t_00000/attempts.json" in listing(bucket)
    local = str(tmp_path / "t" / "pruned.json")  # a local path: an atomic local write, as before
    write_record(local, {"step": 2})
    assert read_record(local) == {"step": 2} and json.loads(Path(local).read_text()) == {"step": 2}


SPEC = """\
name: s3sweep
method: grid
metric: {{name: rewards/margins, goal: maximize}}
parameters:
  learning_rate: {{values: [3.0e-3, 1.0e-6]}}
early_terminate: {{type: optuna, pruner: median, n_startup_trials: 1, warmup_fraction: 0.2}}
model:
  name_or_path: builtin:tiny-mistral
  lora: {{r: 4, lora_alpha: 8, lora_dropout: 0.0}}
data: {{path: builtin:synthetic, max_length: 96, test_size: 0.1, max_rows: 96}}
training: {{per_device_train_batch_size: 4, max_steps: 12, logging_steps: 2, warmup_steps: 0}}
resources: {{cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent_trials: 1, num_cpus: 1}}
output: {{storage: "{storage}"}}
"""


@pytest.mark.extended
@pytest.mark.slow
def test_a_sweep_on_s3_storage_brings_back_attempts_and_pruning_records(bucket: str, tmp_path: Path) -> None:
    """Both trials run out of memory at batch 4 (injected) and finish at batch 2 × accumulation 2; the second
    (lr 1e-6) is pruned by the median rule. Their records are written to the bucket, not to a local folder
    named after it, and come back with Ray's files."""
    (tmp_path / "s3sweep.yaml").write_text(SPEC.format(storage=bucket))
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1",
           "SWEEPER_TEST_OOM_AT_STEP": "2", "SWEEPER_TEST_OOM_ABOVE_BATCH": "2"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", "s3sweep.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    in_bucket = listing(join(bucket, "s3sweep"))
    trial_dirs = sorted({p.split("/")[0] for p in in_bucket if "_0000" in p.split("/")[0]})
    assert len(trial_dirs) == 2
    for d in trial_dirs:
        assert f"{d}/result.json" in in_bucket and f"{d}/attempts.json" in in_bucket
    assert sum(f"{d}/pruned.json" in in_bucket for d in trial_dirs) == 1
    assert not (tmp_path / "bucket").exists()  # nothing written to a local folder named after the bucket

    sweep = load_sweep(tmp_path / "trials" / "s3sweep")  # the copy back
    assert sweep.by_status() == {"completed": 1, "pruned": 1}
    for t in sweep.trials:
        assert (
            [(a["status"], a["per_device_train_batch_size"]) for a in t.attempts] == [("oom", 4), ("completed", 2)]
            or t.status == "pruned"
            and [a["status"] for a in t.attempts] == ["oom"]
        )
    pruned = next(t for t in sweep.trials if t.status == "pruned")
    assert pruned.params["learning_rate"] == 1e-6 and pruned.pruned["reason"].startswith("median")
    assert "pruned at" in proc.stdout  # the progress line read pruned.json from the bucket
    report = (tmp_path / "reports" / "s3sweep.md").read_text()
    assert "1 completed, 1 pruned" in report and "out-of-memory" in report
