"""Out of memory is data: an injected torch.OutOfMemoryError ends an attempt, the trial reruns at half the
per-device batch and twice the accumulation, every attempt is recorded, and the sweep goes on.

The error is injected by the test-only hook in sweeper.train.trial (SWEEPER_TEST_OOM_AT_STEP /
SWEEPER_TEST_OOM_ABOVE_BATCH), on CPU, with the builtin tiny model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sweeper.records.store import load_sweep

from ..conftest import ROOT

pytestmark = pytest.mark.slow

SPEC = """\
name: oom
method: grid
parameters:
  per_device_train_batch_size: {values: [4, 2]}   # batch 4 runs out of memory at step 2; batch 2 fits
model:
  name_or_path: builtin:tiny-mistral
  lora: {r: 4, lora_alpha: 8, lora_dropout: 0.0}
data: {path: builtin:synthetic, max_length: 96, test_size: 0.1, max_rows: 64}
training: {max_steps: 4, logging_steps: 1, learning_rate: 3.0e-3, gradient_accumulation_steps: 1, warmup_steps: 0}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent_trials: 1, num_cpus: 1}
"""


@pytest.fixture(scope="module")
def oom_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    work = tmp_path_factory.mktemp("oom")
    (work / "oom.yaml").write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1",
           "SWEEPER_TEST_OOM_AT_STEP": "2", "SWEEPER_TEST_OOM_ABOVE_BATCH": "2"}  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", "oom.yaml"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc.stdout, time.monotonic() - started


def test_the_sweep_completes_and_the_oom_trial_is_retried_at_the_same_effective_batch(
    oom_sweep: tuple[Path, str, float],
) -> None:
    work, stdout, wall = oom_sweep
    sweep = load_sweep(work / "trials" / "oom")
    assert sweep.by_status() == {"completed": 2}  # the sweep went on, and the retry fitted
    big = next(t for t in sweep.trials if t.params["per_device_train_batch_size"] == 4)
    attempts = json.loads((big.path / "attempts.json").read_text())
    assert [(a["status"], a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) for a in attempts] == [
        ("oom", 4, 1),  # the injected error at step 2
        ("completed", 2, 2),  # half the batch, twice the accumulation
    ]
    assert [a["effective_batch"] for a in attempts] == [4, 4]  # the swept quantity never changed
    assert attempts[0]["step"] == 2 and "OutOfMemoryError" in attempts[0]["error"]
    assert attempts[0]["freed"] is True  # nothing of the failed attempt was left alive for the retry
    assert big.final["sweeper/attempt"] == 2 and big.final["sweeper/per_device_train_batch_size"] == 2
    assert [r["sweeper/step"] for r in big.curve] == [1, 2, 3, 4]  # the curve is the retry's
    assert [r["sweeper/examples_seen"] for r in big.curve] == [4, 8, 12, 16]
    assert "attempt 2 bs 2" in stdout  # the progress lines say it is a retry
    print(f"OOM sweep wall time: {wall:.1f} s")


def test_the_next_trial_starts_clean(oom_sweep: tuple[Path, str, float]) -> None:
    work, _, _ = oom_sweep
    sweep = load_sweep(work / "trials" / "oom")
    small = next(t for t in sweep.trials if t.params["per_device_train_batch_size"] == 2)
    assert not (small.path / "attempts.json").exists()  # its first attempt ran through
    assert small.final["sweeper/attempt"] == 1 and small.final["sweeper/done"] == 1
    peaks = [r["sweeper/peak_rss_mb"] for r in small.curve]
    assert len(peaks) == 4 and 100 < peaks[0] and peaks == sorted(peaks)  # plausible, never decreasing
    assert all(r["sweeper/predicted_peak_gb"] > 0 for r in small.curve)  # the GPU prediction, reported on CPU
    assert not (work / "trials" / "oom" / "infeasible.json").exists()  # every config fitted in the end


def test_a_trial_that_never_fits_ends_as_oom_and_frees_memory(tmp_path: Path) -> None:
    """No Ray: run_with_oom_retries straight, with the error injected at every batch size."""
    from sweeper.config.spec import parse_spec
    from sweeper.plan import resolve
    from sweeper.train.trial import TrialJob, oom_injection, run_with_oom_retries

    from .test_trial import rows

    spec = parse_spec({
        "name": "t", "model": {"name_or_path": "builtin:tiny-mistral", "lora": {"r": 4, "lora_alpha": 8}},
        "data": {"path": "builtin:synthetic", "max_length": 96},
        "training": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3, "max_steps": 3},
    })  # fmt: skip
    reports: list[dict[str, Any]] = []
    inject = oom_injection({"SWEEPER_TEST_OOM_AT_STEP": "1", "SWEEPER_TEST_OOM_ABOVE_BATCH": "0"})
    final = run_with_oom_retries(TrialJob(resolve(spec, {}), rows(16)), lambda m, c: reports.append(m),
                                 attempts_path=str(tmp_path / "attempts.json"), callbacks_for=inject)  # fmt: skip
    attempts = json.loads((tmp_path / "attempts.json").read_text())
    assert [(a["per_device_train_batch_size"], a["status"], a["effective_batch"]) for a in attempts] == [
        (2, "oom", 6),
        (1, "oom", 6),  # down to batch 1, then no further retry
    ]
    assert all(a["freed"] for a in attempts)
    assert final["sweeper/oom"] == 1 and "sweeper/done" not in final  # store reads this trial as "oom"
    assert reports[-1] is final  # reported, so Ray records it, and the trainable returns normally


@pytest.mark.extended
def test_a_sweep_in_which_no_trial_completed_exits_non_zero_and_says_so(tmp_path: Path) -> None:
    # one trial, out of memory at step 1 with oom: fail: nothing completed, so the command fails (the report stays)
    spec = SPEC.replace("per_device_train_batch_size: {values: [4, 2]}", "per_device_train_batch_size: {values: [4]}")
    (tmp_path / "oom.yaml").write_text(spec.replace("num_cpus: 1}", "num_cpus: 1, oom: fail}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SWEEPER_TEST_OOM_AT_STEP": "1",
           "SWEEPER_TEST_OOM_ABOVE_BATCH": "0"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", "oom.yaml"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("ERROR: sweep 'oom': no trial completed (1 oom)"), error
    assert (tmp_path / "reports" / "oom.md").is_file()  # the report is written all the same
    assert "Traceback" not in proc.stderr
