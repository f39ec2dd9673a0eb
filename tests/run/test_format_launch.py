"""A real launch on a non-orca format: TRL's conversational rows (system turn included), format detected, one tiny
4-bit trial trained through a local Ray, the prompts rendered through the model's chat template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.data.synthetic import synthetic_preference_rows
from sweeper.records.store import load_sweep

from ..conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.extended
def test_a_conversational_dataset_trains_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "conversational.jsonl"
    with data.open("w") as fh:
        for row in synthetic_preference_rows(48):
            prompt = [{"role": "user", "content": row["question"]}]
            if row["system"]:
                prompt.insert(0, {"role": "system", "content": row["system"]})
            fh.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": row["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": row["rejected"]}]}) + "\n")  # fmt: skip
    spec = tmp_path / "conv.yaml"
    spec.write_text(
        "name: conv\nparameters: {learning_rate: {values: [3.0e-3]}}\n"
        "model: {name_or_path: builtin:tiny-mistral, quantization: 4bit, lora: {r: 4, lora_alpha: 8}}\n"
        f"data: {{path: '{data}', test_size: 8, max_length: 96}}\n"
        "training: {per_device_train_batch_size: 4, max_steps: 6, logging_steps: 1}\n"
        "resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent_trials: 1}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "48 rows: 48 valid; format conversational (detected); 40 train / 8 held out" in proc.stdout
    sweep = load_sweep(tmp_path / "trials" / "conv")
    assert sweep.by_status() == {"completed": 1}
    assert sweep.meta["data"]["format"] == "conversational"
    rows = [json.loads(line) for line in (tmp_path / "trials" / "conv" / "data" / "train.jsonl").open()]
    assert all(r["prompt"].startswith("[INST] ") and r["prompt"].endswith(" [/INST]") for r in rows)  # Mistral's
    assert any("Please ask me your question" in r["prompt"] for r in rows)  # a system turn, via the workaround
    assert sweep.trials[0].value("rewards/margins") > 0
