"""Held-out evaluation for real: a sweep folder with two trials trained here on the synthetic set (and a pruned one),
evaluated by ``python -m sweeper evaluate`` against the tiny base model on CPU."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from sweeper.__main__ import main  # noqa: E402
from sweeper.config.spec import EvaluationSection, parse_spec  # noqa: E402
from sweeper.plan import resolve  # noqa: E402
from sweeper.records.store import load_sweep, write_json  # noqa: E402
from sweeper.run.evalrun import evaluate_sweep  # noqa: E402
from sweeper.train.prepare import prepare_data, save_prepared  # noqa: E402
from sweeper.train.trial import TrialJob, run_trial  # noqa: E402

from ..conftest import FIXTURES  # noqa: E402

pytestmark = pytest.mark.slow

MC_LETTERS = FIXTURES / "data" / "mc_safety.jsonl"
MC_COLUMNS = FIXTURES / "data" / "mc_safety_columns.jsonl"
RAW_SPEC: dict[str, Any] = {
    "name": "evalsweep",
    "metric": {"name": "rewards/margins", "goal": "maximize"},
    "parameters": {"learning_rate": {"values": [3.0e-3, 1.0e-5]}},
    "model": {"name_or_path": "builtin:tiny-mistral", "quantization": "4bit",
              "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}},
    "data": {"path": "builtin:synthetic", "test_size": 0.1, "max_length": 96},
    "training": {"per_device_train_batch_size": 4, "max_steps": 24, "logging_steps": 4, "warmup_steps": 0.1},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    "evaluation": {"n_samples": 2, "max_new_tokens": 24, "top_k": 1, "multiple_choice": [
        {"path": str(MC_LETTERS), "name": "safety"},
        {"path": str(MC_COLUMNS), "name": "safety-columns", "question": "q", "options": ["opa", "opb", "opc"],
         "answer": "cop"}]},
}  # fmt: skip


def train_into(folder: Path, settings: dict[str, Any], train: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One real trial; its results and adapter laid out as Ray Tune leaves them (result.json, checkpoint_000000)."""
    results: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint: str | None) -> None:
        results.append(dict(metrics))
        if checkpoint:
            shutil.copytree(checkpoint, folder / "checkpoint_000000")

    run_trial(TrialJob(settings, train), report)
    return results


def build_sweep(root: Path) -> Path:
    spec = parse_spec(RAW_SPEC)
    sweep_dir = root / "trials" / spec.name
    prepared = prepare_data(spec)
    save_prepared(prepared, sweep_dir / "data")
    write_json(sweep_dir / "sweep.json", {
        "name": spec.name, "spec": spec.model_dump(mode="json"), "metric": spec.metric.model_dump(),
        "swept": ["learning_rate"], "n_planned": 3, "host": {"ray": {"address": "local"}},
        "spec_path": "sweeps/evalsweep.yaml",
    })  # fmt: skip
    for i, (lr, steps) in enumerate([(3e-3, 24), (1e-5, 8)]):
        folder = sweep_dir / f"ev000_0000{i}_lr={lr}"
        settings = resolve(spec, {"learning_rate": lr, "max_steps": steps})
        results = train_into(folder, settings, prepared.train)
        write_json(folder / "params.json", {"params": {"learning_rate": lr}})
        (folder / "result.json").write_text("".join(json.dumps({**r, "trial_id": f"ev000_0000{i}"}) + "\n"
                                                    for r in results))  # fmt: skip
    pruned = sweep_dir / "ev000_00002_lr=0.0001"
    write_json(pruned / "params.json", {"params": {"learning_rate": 1e-4}})
    (pruned / "result.json").write_text(json.dumps({"rewards/margins": 0.01, "sweeper/step": 4,
                                                    "trial_id": "ev000_00002"}) + "\n")  # fmt: skip
    write_json(pruned / "pruned.json", {"step": 4, "examples_seen": 16, "reason": "median"})
    broken = sweep_dir / "ev000_00003_lr=0.001"  # finished, but its adapter file is damaged
    shutil.copytree(sweep_dir / "ev000_00000_lr=0.003", broken)
    (broken / "checkpoint_000000" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    (broken / "result.json").write_text((broken / "result.json").read_text().replace("ev000_00000", "ev000_00003"))
    write_json(broken / "params.json", {"params": {"learning_rate": 1e-3}})
    return sweep_dir


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evaluate")
    sweep_dir = build_sweep(root)
    started = time.monotonic()
    code = main(["evaluate", str(sweep_dir), "--reports-dir", str(root / "reports")])
    assert code == 0
    seconds = time.monotonic() - started
    sweep = load_sweep(sweep_dir)
    return {"root": root, "sweep": sweep, "seconds": seconds,
            "by_id": {t.trial_id: t.evaluation for t in sweep.trials}}  # fmt: skip


def test_a_trained_trial_prefers_chosen_more_often_than_base(evaluated: dict[str, Any]) -> None:
    base = evaluated["sweep"].base_evaluation[0]
    good, weak = evaluated["by_id"]["ev000_00000"], evaluated["by_id"]["ev000_00001"]
    n = base["preference"]["n"]
    assert n == 26 == good["preference"]["n"]  # every held-out pair of the 256-row synthetic set (10%)
    # the random base is near chance; 24 steps at lr 3e-3 learn the cautious-vs-harmful signal
    assert good["preference"]["rate"] >= 0.9 > base["preference"]["rate"] + 0.2
    assert good["preference"]["margin_mean"] > base["preference"]["margin_mean"] + 1.0
    assert good["preference"]["reward_accuracy"] >= 0.9  # DPO's implicit reward against the base as reference
    assert "reward_accuracy" not in base["preference"]  # the base is its own reference: undefined
    # the weak trial's adapter really was swapped in: its log-probs are neither the base's nor the good trial's
    weak_chosen = weak["preference"]["logps_chosen_mean"]
    assert weak_chosen != good["preference"]["logps_chosen_mean"]
    assert weak_chosen != base["preference"]["logps_chosen_mean"]
    assert abs(weak_chosen - base["preference"]["logps_chosen_mean"]) < 1.0  # lr 1e-5 for 8 steps barely moves


def test_multiple_choice_scorer_picks_the_answer_the_trained_trial_finds_likely(evaluated: dict[str, Any]) -> None:
    good = evaluated["by_id"]["ev000_00000"]["multiple_choice"]
    base = evaluated["sweep"].base_evaluation[0]["multiple_choice"]
    for name in ("safety", "safety-columns"):  # the same 8 questions, mapped two ways (letters; columns + index)
        assert good[name]["n"] == 8 and good[name]["chance"] == pytest.approx(1 / 3)
        assert good[name]["accuracy"] == 1.0  # the cautious option, likelier after DPO, wins every question
        assert base[name]["accuracy"] < good[name]["accuracy"]
    assert good["safety"] == good["safety-columns"]


def test_samples_file_has_base_and_top_trial_side_by_side(evaluated: dict[str, Any]) -> None:
    samples = evaluated["root"] / "reports" / "evalsweep" / "samples.md"
    text = samples.read_text()
    assert text.startswith("# Generation samples: evalsweep")
    assert "## Prompt 1" in text and "## Prompt 2" in text and "## Prompt 3" not in text
    assert "| base |" in text and "| `ev000_00000` |" in text  # top_k 1: the metric's winner
    assert "| `ev000_00001` |" not in text
    assert "| model | mean tokens | hit the cap | distinct-1 | distinct-2 | repeated 3-grams |" in text
    good = evaluated["by_id"]["ev000_00000"]
    assert len(good["samples"]) == 2 and good["generation"]["n_tokens"] <= 24


def test_pruned_trial_is_skipped_with_a_reason_and_the_report_shows_base_first(evaluated: dict[str, Any]) -> None:
    pruned = evaluated["by_id"]["ev000_00002"]
    assert pruned["status"] == "skipped" and pruned["reason"].startswith("pruned at 16 examples")
    report = (evaluated["root"] / "reports" / "evalsweep.md").read_text()
    section = report.split("## Held-out evaluation")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    assert rows[0].startswith("| base | evaluated |")
    assert rows[1].startswith("| `ev000_00000` ★ ▲ | evaluated |")
    assert "skipped: pruned at 16 examples" in rows[3]
    assert rows[4].startswith("| `ev000_00003` | error: ")  # the damaged adapter: recorded, the others went on
    assert evaluated["by_id"]["ev000_00003"]["status"] == "error"
    verdict = report.split("## Verdict")[1].split("## Trials")[0]
    assert "Held-out evidence agrees: `ev000_00000`" in verdict
    assert "[samples.md](evalsweep/samples.md)" in section
    print(f"evaluation of base + 2 trials, inline on CPU: {evaluated['seconds']:.1f} s")


@pytest.mark.extended
def test_ray_tasks_give_the_same_numbers_as_inline(evaluated: dict[str, Any]) -> None:
    # a copy with the winner alone: two Ray tasks (base, trial), each loading the model in a fresh worker
    sweep_dir = evaluated["root"] / "ray" / "evalsweep"
    shutil.copytree(evaluated["sweep"].path, sweep_dir, ignore=shutil.ignore_patterns("ev000_0000[123]*"))
    inline = {k: v["preference"] for k, v in evaluated["by_id"].items() if k == "ev000_00000"}
    inline["base"] = evaluated["sweep"].base_evaluation[0]["preference"]
    started = time.monotonic()
    sweep = evaluate_sweep(sweep_dir, EvaluationSection(n_samples=0), address="local",
                           reports_dir=evaluated["root"] / "reports-ray")  # fmt: skip
    print(f"as Ray tasks on a local Ray: {time.monotonic() - started:.1f} s")
    on_ray = {t.trial_id: t.evaluation["preference"] for t in sweep.trials}
    on_ray["base"] = sweep.base_evaluation[0]["preference"]
    assert on_ray.keys() == inline.keys()
    for key, figures in inline.items():
        for name, value in figures.items():
            # 4-bit kernels differ in the last bits between a fresh base and one that held another adapter first
            assert on_ray[key][name] == pytest.approx(value, abs=0.01), (key, name)
        assert on_ray[key]["rate"] == figures["rate"]


@pytest.mark.parametrize(("trained_in", "loaded_in"), [(True, True), (False, False), (None, False)])
def test_evaluation_loads_the_base_in_the_trials_dtype(
    monkeypatch: pytest.MonkeyPatch, trained_in: bool | None, loaded_in: bool
) -> None:
    # training.bf16 true/false is what the trial trained in; unset (None) is fp32 on a CPU, as in the trial
    from sweeper.train import evaluate

    seen: list[bool] = []

    class Loaded(Exception):
        pass

    def load_model(model: dict[str, Any], bf16: bool) -> Any:
        seen.append(bf16)
        raise Loaded

    monkeypatch.setattr(evaluate, "load_model", load_model)
    with pytest.raises(Loaded):
        evaluate.run_jobs({"model": {}, "bf16": trained_in, "max_length": 64, "batch_size": 2, "data": {}, "jobs": []})
    assert seen == [loaded_in]
