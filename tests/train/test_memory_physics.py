"""The memory estimate's terms against one real DPO step on CPU (benchmarks/memory_physics.py, tiny model).

Tensor sizes do not depend on the device: every term sweeper.plan.estimate counts (weights, the separate
reference, LoRA with its optimizer states, what the forward keeps, one recomputed layer, the fused LM head's
temporaries, the peak) is measured in a real trial's step and must be within 15% of the prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def test_every_term_is_within_15_percent_on_the_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "cells.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "memory_physics.py"), "--models", "tiny", "--batches", "2",
         "--lengths", "128", "--quantization", "4bit", "none", "--reference", "separate", "--json", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    cells = json.loads(out.read_text())
    assert [(c["quantization"], c["reference"]) for c in cells] == [("4bit", "separate"), ("none", "separate")]
    for cell in cells:
        measured, predicted = cell["measured"], cell["predicted"]
        assert measured["tokens"] == predicted["tokens"] == 2 * 2 * 128  # every sequence truncated to max_length
        for term in ("weights", "reference", "lora", "kept", "layer", "transient", "peak"):
            assert measured[term] > 0, term  # a separate reference: every term is there
            error = (predicted[term] - measured[term]) / measured[term]
            assert abs(error) <= 0.15, (cell["quantization"], term, measured[term], predicted[term])
    assert "| tiny | 4bit | separate | 2 | 128 |" in done.stdout and "| ok |" in done.stdout
