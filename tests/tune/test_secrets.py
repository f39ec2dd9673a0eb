"""Secrets come from the environment only: planted tokens appear nowhere in trials/, reports/, Ray's logs, our
output or the dashboard, after a real launch with Neptune (offline), a report and the dashboard page."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sweeper.records.store import load_sweep

from ..conftest import ROOT
from ..records.test_tracking import neptune_operations
from ..report.test_dashboard import app_test

pytestmark = pytest.mark.slow

MARK = "PLANTED" + secrets.token_hex(4)
PLANTED = {
    "NEPTUNE_API_TOKEN": f"sk-test-{MARK}-neptune",
    "HF_TOKEN": f"hf_{MARK}_hub",
    "HUGGING_FACE_HUB_TOKEN": f"hf_{MARK}_hub_old",
    "WANDB_API_KEY": f"{MARK}wandb",
    "AWS_SECRET_ACCESS_KEY": f"{MARK}/aws/secret",
}


def leaks(folder: Path) -> list[str]:
    """Files under folder whose bytes contain the planted marker."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and MARK.encode() in path.read_bytes():
            found.append(str(path))
    return found


@pytest.mark.extended
def test_planted_tokens_appear_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neptune")
    text = (ROOT / "sweeps" / "smoke.yaml").read_text().replace("name: smoke", "name: secrets")
    text = text.replace("gradient_accumulation_steps: {values: [1, 2]}", "gradient_accumulation_steps: {values: [1]}")
    text = text.replace("max_steps: 24", "max_steps: 4")
    text += "tracking:\n  neptune: {project: team/dpo-sweeps, mode: offline, tags: [secrets-test]}\n"
    (tmp_path / "secrets.yaml").write_text(text)
    ray_tmp = Path(tempfile.mkdtemp(prefix="sws-", dir="/tmp"))  # Ray's session dir and logs (short socket paths)
    env = {**os.environ, **PLANTED, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1",
           "RAY_TMPDIR": str(ray_tmp)}  # fmt: skip
    try:
        launch = subprocess.run([sys.executable, "-m", "sweeper", "launch", "secrets.yaml"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=900)  # fmt: skip
        assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
        report = subprocess.run([sys.executable, "-m", "sweeper", "report", "trials/secrets"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert report.returncode == 0, report.stderr
        ray_leaks = leaks(ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    sweep_dir = tmp_path / "trials" / "secrets"
    assert load_sweep(sweep_dir).by_status() == {"completed": 2}
    assert len({op["run"] for op in neptune_operations(sweep_dir)}) == 3  # Neptune did log: 2 trials + the sweep
    assert (sweep_dir / "tracking.jsonl").is_file()

    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)  # the dashboard page renders with the tokens in its environment too
    at = app_test(tmp_path / "trials", monkeypatch)
    at.run()
    assert not at.exception
    shown = [str(e.value) for kind in ("markdown", "text", "caption", "title", "header", "subheader", "code", "json")
             for e in at.get(kind)] + [e.value.to_csv() for e in at.dataframe]  # fmt: skip
    assert any("secrets" in s for s in shown)  # the page did render the sweep

    assert leaks(tmp_path / "trials") == []
    assert leaks(tmp_path / "reports") == []
    assert ray_leaks == []
    for output in (launch.stdout, launch.stderr, report.stdout, report.stderr, *shown):
        assert MARK not in output
