"""Helpers for tests that kill Ray drivers and nodes: find processes by PID, never by name (no `ray stop`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import psutil


def tree(pid: int) -> list[psutil.Process]:
    """A process and every descendant (Ray's gcs_server, raylet and workers are children of who started them)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def with_cmdline(marker: str) -> list[psutil.Process]:
    """Processes whose command line contains ``marker`` (a test's unique temp dir or node address)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_all(procs: Iterable[psutil.Process], timeout: float = 10.0) -> None:
    """SIGKILL each process (by PID, as captured) and wait for it."""
    procs = list(procs)
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(procs, timeout=timeout)


def trial_states(sweep_dir: Path) -> dict[str, tuple[str, str]]:
    """trial id -> (status, folder name) from Ray's newest experiment_state-*.json ({} before the first save)."""
    files = sorted(sweep_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except (json.JSONDecodeError, OSError):
        return {}  # caught mid-write
    out = {}
    for trial_json, _ in state.get("trial_data", []):
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = (trial["status"], trial.get("relative_logdir") or "")
    return out


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
