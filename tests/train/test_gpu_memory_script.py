"""benchmarks/gpu_memory.py --dry-run: the GPU check builds and runs its code path on a CPU (CI has no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_gpu_check_builds_and_runs_on_cpu() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_memory.py"), "--dry-run"],
        capture_output=True, text=True, timeout=900, check=False, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Mistral-7B architecture: 7.242B parameters" in out  # built from its config, matches the estimate
    assert "batch 8: 30.2 GiB (band 25.6-34.8)" in out  # the prediction the GPU run compares with
    assert "the OOM step would start at batch 32 on an 80 GiB card" in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert rows[0].startswith("| 1 | 1 | done |") and rows[1].startswith("| 2 | 2 | done |")  # trained for real
    # the OOM path: batch 2 ran out (injected on CPU), the halved retry at batch 1 x accumulation 2 completed
    assert rows[2].startswith("| 2 | 1 | done |")
    assert "attempt 1: batch 2 x accumulation 1: oom at step 1" in out
    assert "attempt 2: batch 1 x accumulation 2: completed" in out
