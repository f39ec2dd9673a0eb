"""A sweep through a real local Ray that mixes reference modes and quantizations.

4 trials (shared 4-bit, adapter 4-bit, separate 4-bit, shared 8-bit): two shared references are computed
by Ray tasks before the trials and cached under trials/<name>/refcache/; a later sweep with the same key
(here: the same spec under another name) finds both there instead of computing them. Workers are
reused between trials (resources.reuse_actors), which also keeps the test short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sweeper.config.spec import load_spec
from sweeper.plan import compile_plan
from sweeper.records import refcache
from sweeper.records.store import load_sweep
from sweeper.run.launch import absolute_paths
from sweeper.tune.refshare import shared_references

from ..conftest import ROOT

pytestmark = pytest.mark.slow

SPEC = """\
name: refmix
method: grid
parameters:
  quantization: {values: [4bit, 8bit]}
  reference: {values: [shared, adapter, separate]}
run_cap: 4                    # the grid's first 4: shared, adapter, separate at 4-bit; shared at 8-bit
model:
  name_or_path: builtin:tiny-mistral
  lora: {r: 4, lora_alpha: 8, lora_dropout: 0.0}
data: {path: builtin:synthetic, max_length: 96, test_size: 8, max_rows: 40}
training: {max_steps: 3, logging_steps: 1, learning_rate: 3.0e-3, per_device_train_batch_size: 4, warmup_steps: 0}
resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent_trials: 2, reuse_actors: true}
"""


def launch(work: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    env.pop("SWEEPER_TEST_OOM_AT_STEP", None)
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", "refmix.yaml"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("refmix")
    (work / "refmix.yaml").write_text(SPEC)
    return work, launch(work)


def by_mode(work: Path) -> dict[tuple[str, str], Any]:
    sweep = load_sweep(work / "trials" / "refmix")
    return {(t.params["reference"], t.params["quantization"]): t for t in sweep.trials}


@pytest.mark.extended
def test_every_mode_and_quantization_completes_with_its_records(swept: tuple[Path, str]) -> None:
    work, stdout = swept
    sweep = load_sweep(work / "trials" / "refmix")
    assert sweep.by_status() == {"completed": 4}
    assert set(by_mode(work)) == {("shared", "4bit"), ("adapter", "4bit"), ("separate", "4bit"), ("shared", "8bit")}
    for trial in sweep.trials:
        assert trial.final["sweeper/reference"] == trial.params["reference"]
        assert trial.final["sweeper/peak_rss_mb"] > 0 and trial.final["sweeper/train_s"] > 0  # memory and speed
    assert stdout.count("computed in") == 2  # one reference per quantization, before the trials
    assert stdout.index("Computing reference log-probs") < stdout.index("started")


@pytest.mark.extended
def test_shared_trials_agree_with_adapter_and_separate(swept: tuple[Path, str]) -> None:
    work, _ = swept
    trials = by_mode(work)
    adapter = trials[("adapter", "4bit")]
    assert abs(adapter.value("rewards/margins") or 0) > 1e-2  # trained: margins moved off 0
    for mode in ("shared", "separate"):
        for key in ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected"):
            assert trials[(mode, "4bit")].value(key) == pytest.approx(adapter.value(key), abs=1e-3), (mode, key)


@pytest.mark.extended
def test_the_caches_are_written_and_a_later_sweep_reuses_them(swept: tuple[Path, str]) -> None:
    work, _ = swept
    sweep_dir = work / "trials" / "refmix"
    folders = sorted((sweep_dir / "refcache").iterdir())
    assert len(folders) == 2
    found = [refcache.read_cache(folder) for folder in folders]  # verified: hash, shape, key
    assert {f.manifest["components"]["quantization"] for f in found} == {"4bit", "8bit"}
    assert all(f.manifest["n_train"] == 32 and f.manifest["n_eval"] == 8 for f in found)
    # A later sweep (another name, same model, data, max_length, quantizations): no Ray task, both reused.
    spec = absolute_paths(load_spec(work / "refmix.yaml")).model_copy(update={"name": "later"})
    rows = {n: [json.loads(line) for line in (sweep_dir / "data" / f"{n}.jsonl").read_text().splitlines()]
            for n in ("train", "test")}  # fmt: skip
    said: list[str] = []
    refs = shared_references(compile_plan(spec), rows["train"], rows["test"], work / "trials", 0, say=said.append)
    assert len(refs) == 2 and sum("reused from" in s for s in said) == 2, said
    assert {r["key"] for r in refs.values()} == {f.key for f in found}
    copied = sorted((work / "trials" / "later" / "refcache").iterdir())
    assert [p.name for p in copied] == [p.name for p in folders]
