"""A real two-node Ray cluster on one machine (loopback 127.0.0.2 head, 127.0.0.3 worker, token auth):
`launch --address` places trials on both nodes; killing the worker node mid-trial reruns its trial on the head
(FailureConfig.max_failures) and the sweep completes. Every process is stopped by PID, never `ray stop`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from sweeper.records.store import load_sweep, read_results

from ..conftest import ROOT
from ..ray_procs import kill_all, tree, trial_states, wait_for, with_cmdline

pytestmark = pytest.mark.slow

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
NODE_MEMORY = str(2 * 1024**3)  # what Ray may schedule on a node (each would otherwise claim the whole host)
OBJECT_STORE = str(200 * 1024**2)


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    temp_dir: Path
    head: list[psutil.Process] = field(default_factory=list)
    worker: list[psutil.Process] = field(default_factory=list)

    def processes(self) -> list[psutil.Process]:
        """Everything this cluster runs now: both nodes' processes, their children, anything in its temp dir."""
        found = {p.pid: p for p in with_cmdline(str(self.temp_dir))}
        for proc in [*self.head, *self.worker]:
            found.update({p.pid: p for p in tree(proc.pid)})
        return list(found.values())


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ray_start(args: list[str], env: dict[str, str]) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus=1", f"--memory={NODE_MEMORY}", f"--object-store-memory={OBJECT_STORE}",
              "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0"]  # fmt: skip
    proc = subprocess.run([ray, "start", *args, *common], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    temp_dir = Path(tempfile.mkdtemp(prefix="swr-", dir="/tmp"))  # short: Ray's socket paths live under it
    token = temp_dir / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # (conftest's loopback switch for local Ray) refuses 2 nodes
    port = free_port(HEAD_IP)
    c = Cluster(f"{HEAD_IP}:{port}", env, temp_dir)
    try:
        ray_start(["--head", f"--port={port}", f"--node-ip-address={HEAD_IP}", f"--temp-dir={temp_dir / 'ray'}",
                   "--include-dashboard=false"], env)  # fmt: skip
        c.head = with_cmdline(str(temp_dir))
        head_pids = {p.pid for p in c.head}
        ray_start([f"--address={c.address}", f"--node-ip-address={WORKER_IP}"], env)
        c.worker = [p for p in with_cmdline(str(temp_dir)) if p.pid not in head_pids]
        assert any(WORKER_IP in " ".join(p.cmdline()) for p in c.worker), "the worker node's raylet is not found"
        yield c
    finally:
        kill_all(c.processes())
        shutil.rmtree(temp_dir, ignore_errors=True)


def cluster_spec(tmp_path: Path) -> Path:
    text = (ROOT / "sweeps" / "smoke.yaml").read_text().replace("name: smoke", "name: cluster")
    text = text.replace("learning_rate: {values: [1.0e-5, 3.0e-3]}", "learning_rate: {values: [3.0e-3, 1.0e-3]}")
    text = text.replace("gradient_accumulation_steps: {values: [1, 2]}", "gradient_accumulation_steps: {values: [1]}")
    # Long enough (~13 s a trial here) that the trial on the worker node is still running when the test sees its
    # first rows: a CPU-starved driver takes results in bursts, and 40 steps (~4 s) could arrive all at once, done.
    text = text.replace("max_steps: 24", "max_steps: 120").replace("logging_steps: 2", "logging_steps: 6")
    spec = tmp_path / "cluster.yaml"
    spec.write_text(text)
    return spec


@pytest.mark.extended
def test_two_nodes_and_a_lost_worker_node(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    env = {**cluster.env, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    sweep_dir = tmp_path / "trials" / "cluster"
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "launch", str(cluster_spec(tmp_path)), "--address", cluster.address],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(driver.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    peak = {"rss_mb": 0.0}
    sampling = threading.Event()

    def sample() -> None:  # the whole test's memory: both nodes, their workers and the driver
        while not sampling.is_set():
            procs = {p.pid: p for p in [*cluster.processes(), *tree(driver.pid)]}.values()
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            peak["rss_mb"] = max(peak["rss_mb"], total / 2**20)
            time.sleep(1)

    threading.Thread(target=sample, daemon=True).start()
    try:

        def on_worker_node() -> str | None:  # a trial running on the worker that has logged a step
            assert driver.poll() is None, "".join(lines)[-3000:]
            for folder in sweep_dir.glob("*--*"):
                rows = read_results(folder / "result.json")
                if rows and rows[-1].get("sweeper/node_ip") == WORKER_IP and not rows[-1].get("sweeper/done"):
                    return folder.name
                if rows and rows[-1].get("sweeper/node_ip") == WORKER_IP:
                    raise AssertionError(f"{folder.name} finished on the worker node before the test saw it running")
            return None

        moved = wait_for(on_worker_node, 300, "a trial logging from the worker node")
        kill_all(p for w in cluster.worker for p in tree(w.pid))  # the worker node dies: raylet, agents, trial
        killed_at = time.monotonic() - started
        assert driver.wait(300) == 0, "".join(lines)[-3000:]
    finally:
        sampling.set()
        kill_all(tree(driver.pid))
    wall = time.monotonic() - started
    print(
        f"\ntwo-node test: worker killed at {killed_at:.0f} s, sweep done at {wall:.0f} s, "
        f"peak RSS of cluster + driver {peak['rss_mb']:.0f} MiB"
    )

    sweep = load_sweep(sweep_dir)
    assert sweep.by_status() == {"completed": 2}, "".join(lines)[-3000:]
    # Recorded node ids prove the placement: both nodes ran trials; the lost trial finished on the head.
    runs = {t.trial_id: read_results(t.path / "result.json") for t in sweep.trials}
    nodes = {r["sweeper/node_id"] for rows in runs.values() for r in rows}
    ips = {r["sweeper/node_ip"] for rows in runs.values() for r in rows}
    assert len(nodes) == 2 and ips == {HEAD_IP, WORKER_IP}
    retried = next(t for t in sweep.trials if moved.startswith(t.trial_id))
    assert runs[retried.trial_id][0]["sweeper/node_ip"] == WORKER_IP  # its first run, lost with the node
    assert retried.final["sweeper/node_ip"] == HEAD_IP and retried.final["sweeper/done"] == 1  # rerun to the end
    assert len(retried.curve) == 20  # the rerun's own curve, not the lost run's steps too
    assert trial_states(sweep_dir)[retried.trial_id][0] == "TERMINATED"
    assert "reruns from scratch, up to 2 time(s)" in "".join(lines)
