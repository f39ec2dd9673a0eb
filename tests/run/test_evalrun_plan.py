"""What the held-out evaluation runs, laid out before any model loads: one base per distinct base model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sweeper.config.spec import EvaluationSection
from sweeper.records import SETTINGS_FILE, load_sweep, write_json
from sweeper.run.evalrun import plan

from ..conftest import FIXTURES


def sweep_with_adapters(tmp_path: Path, references: list[str]) -> Path:
    sweep_dir = Path(shutil.copytree(FIXTURES / "trials" / "smoke", tmp_path / "smoke"))
    rows = [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(4)]
    (sweep_dir / "data").mkdir()
    (sweep_dir / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    for trial, reference in zip(sorted(p for p in sweep_dir.iterdir() if p.name.startswith("2e698")), references,
                                strict=True):  # fmt: skip
        (trial / "checkpoint_000000").mkdir()
        (trial / "checkpoint_000000" / "adapter_config.json").write_text("{}")
        settings = {s: meta["spec"][s] for s in ("model", "data", "training")}
        settings["model"] = {**settings["model"], "reference": reference}
        write_json(trial / SETTINGS_FILE, settings)
    return sweep_dir


def test_sweeping_the_reference_mode_evaluates_the_base_once(tmp_path: Path) -> None:
    sweep = load_sweep(sweep_with_adapters(tmp_path, ["adapter", "shared", "separate", "adapter"]))
    work = plan(sweep, EvaluationSection(n_samples=0))
    assert [g["label"] for g in work.groups] == ["base"]  # the same base model: one base row, not three
    assert len(work.groups[0]["jobs"]) == 1 + 4  # the base, then the four trials' adapters on it


def test_another_quantization_is_another_base(tmp_path: Path) -> None:
    sweep_dir = sweep_with_adapters(tmp_path, ["adapter"] * 4)
    trial = sorted(p for p in sweep_dir.iterdir() if p.name.startswith("2e698"))[0]
    settings = json.loads((trial / SETTINGS_FILE).read_text())
    settings["model"]["quantization"] = "none"
    write_json(trial / SETTINGS_FILE, settings)
    work = plan(load_sweep(sweep_dir), EvaluationSection(n_samples=0))
    assert sorted(g["label"] for g in work.groups) == ["base (4bit)", "base (none)"]
