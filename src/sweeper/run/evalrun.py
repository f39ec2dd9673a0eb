"""Evaluating a finished sweep: which trials, where (inline on this machine, or one Ray task per trial with a
GPU each on a cluster), and the records it leaves: trials/<name>/<trial>/evaluation.json,
trials/<name>/evaluation_base.json and reports/<name>/samples.md.

Everything that can be wrong with the configuration or the data is checked before a model is loaded.
Light at import time: the model work (sweeper.train.evaluate) and ray are imported inside the steps that need them.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from sweeper.config.safeyaml import load_yaml
from sweeper.config.spec import EvaluationSection, Spec, parse_spec
from sweeper.data import mcq
from sweeper.errors import TrialsError, last_line
from sweeper.plan.settings import recorded_settings, resolve
from sweeper.records.files import write_text_atomic
from sweeper.records.store import (
    BASE_EVALUATION_FILE,
    EVALUATION_FILE,
    SweepRecord,
    TrialRecord,
    load_sweep,
    write_json,
)
from sweeper.report import evalstats
from sweeper.report.summary import metric_of

SAMPLES_FILE = "samples.md"


@dataclass
class Plan:
    """What to evaluate: one group per distinct base model (usually one), each with its trial jobs."""

    data: dict[str, Any]  # rows, prompts, max_new_tokens, sets
    groups: list[dict[str, Any]] = field(default_factory=list)  # {"label", "model", "jobs": [...]}
    skipped: dict[str, str] = field(default_factory=dict)  # trial id -> reason
    sampled: list[str] = field(default_factory=list)  # trial ids with generation samples, best first


def evaluation_of(sweep: SweepRecord, config: Path | None = None) -> EvaluationSection:
    """The sweep spec's ``evaluation:`` section, or the one in ``config`` (a YAML file holding the section, under
    ``evaluation:`` or at its top level), validated like a spec: errors name that file and the key."""
    spec = _spec(sweep)
    if config is None:
        return spec.evaluation or EvaluationSection()
    if not config.is_file():
        raise TrialsError(f"{config}: evaluation config not found: check the path")
    raw = load_yaml(config)  # the specs' hardened loader: size, aliases, nesting, duplicate keys, secrets
    section = raw.get("evaluation", raw) if isinstance(raw, dict) else raw
    return parse_spec({**spec.model_dump(mode="json"), "evaluation": section}, source=str(config)).evaluation \
        or EvaluationSection()  # fmt: skip


def spec_of(sweep: SweepRecord) -> Spec | None:
    """The sweep's Spec; keys this version does not know (a newer sweeper wrote sweep.json) are dropped."""
    data = copy.deepcopy(sweep.meta.get("spec"))
    for _ in range(2):
        try:
            return Spec.model_validate(data)
        except ValidationError as exc:
            extra = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
            if not extra or not isinstance(data, dict):
                return None
            for loc in extra:
                _drop(data, loc)
    return None


def _drop(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    node: Any = data
    for key in loc[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(loc[-1], None)


def _spec(sweep: SweepRecord) -> Spec:
    spec = spec_of(sweep)
    if spec is None:
        raise TrialsError(f"{sweep.path}/sweep.json: its spec does not validate with this sweeper: relaunch the sweep")
    return spec


def read_heldout(sweep: SweepRecord, max_rows: int | None) -> list[dict[str, str]]:
    path = sweep.path / "data" / "test.jsonl"
    if not path.is_file():
        raise TrialsError(f"{path}: the held-out split is missing: relaunch the sweep (launch writes it)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise TrialsError(f"{path}: no held-out rows (data.test_size: 0?): relaunch with data.test_size > 0")
    return rows[:max_rows] if max_rows else rows


def skip_reason(t: TrialRecord) -> str | None:
    """Why a trial is not evaluated, or None when it is."""
    if t.status == "pruned":
        where = (t.pruned or {}).get("examples_seen")
        return f"pruned{f' at {where} examples' if where is not None else ''}: no finished adapter"
    if t.status == "oom":
        return "out of memory at every attempt: no adapter"
    if t.status == "error":
        return f"failed ({last_line(t.error, 120)}): no adapter"
    if t.status != "completed":
        return f"{t.status}: no finished adapter"
    if t.adapter is None or not (t.adapter / "adapter_config.json").is_file():
        return "completed but its checkpoint holds no adapter (adapter_config.json)"
    return None


def check_sets(evaluation: EvaluationSection) -> dict[str, list[dict[str, Any]]]:
    """Every multiple-choice set loaded and validated (one DataError line for the first problem)."""
    return {cfg.label: mcq.load_set(cfg, f"evaluation.multiple_choice[{i}]")
            for i, cfg in enumerate(evaluation.multiple_choice)}  # fmt: skip


def plan(sweep: SweepRecord, evaluation: EvaluationSection) -> Plan:
    """Check the configuration and the data (held-out rows, multiple-choice sets) and lay out the jobs."""
    spec = _spec(sweep)
    rows = read_heldout(sweep, evaluation.max_rows)
    sets = check_sets(evaluation)
    picked = random.Random(evaluation.seed).sample(rows, min(evaluation.n_samples, len(rows)))
    prompts = [{"prompt": r["prompt"], "chosen": r["chosen"]} for r in picked]
    data = {"rows": rows, "prompts": prompts, "max_new_tokens": evaluation.max_new_tokens, "sets": sets}
    out = Plan(data=data)
    metric, goal = metric_of(sweep)
    ranked = sorted((t for t in sweep.trials if t.value(metric) is not None and skip_reason(t) is None),
                    key=lambda t: float(t.value(metric) or 0.0), reverse=goal == "maximize")  # fmt: skip
    out.sampled = [t.trial_id for t in ranked[: evaluation.top_k]] if prompts else []
    groups: dict[str, dict[str, Any]] = {}
    for t in sweep.trials:
        reason = skip_reason(t)
        if reason is not None:
            out.skipped[t.trial_id] = reason
            continue
        settings = recorded_settings(spec, t)  # what the trial trained with (settings.json)
        # one base per distinct model: LoRA and the reference mode (adapter, separate, shared) do not change it
        model = settings.model.model_dump(exclude={"lora", "reference"})
        bf16 = settings.training.bf16  # the dtype the trial trained in
        group = groups.setdefault(json.dumps([model, bf16], sort_keys=True),
                                  {"model": settings.model, "bf16": bf16, "jobs": []})  # fmt: skip
        group["jobs"].append({"key": t.trial_id, "adapter": str(t.adapter), "beta": settings.training.beta,
                              "generate": t.trial_id in out.sampled})  # fmt: skip
    if not groups:  # nothing finished: the base alone is still worth a row
        base = resolve(spec, {})
        groups[""] = {"model": base.model, "bf16": base.training.bf16, "jobs": []}
    for g in groups.values():
        label = "base" if len(groups) == 1 else f"base ({g['model'].quantization})"
        g["label"] = label
        g["jobs"].insert(0, {"key": label, "adapter": None, "generate": bool(prompts)})
        out.groups.append(g)
    return out


def cluster_address(sweep: SweepRecord, address: str | None) -> str | None:
    """Where the trials run as Ray tasks: ``--address``, else the cluster the sweep ran on; None = inline."""
    if address:
        return address
    ray_host = (sweep.meta.get("host") or {}).get("ray") or {}
    ran_on = ray_host.get("address")
    return None if ran_on in (None, "local") else str(ran_on)


def evaluate_sweep(path: str | Path, evaluation: EvaluationSection | None = None, address: str | None = None,
                   reports_dir: Path | None = None, out: TextIO | None = None) -> SweepRecord:  # fmt: skip
    """Evaluate base and every finished trial; write the records and samples.md; return the reloaded sweep."""
    out = out or sys.stdout
    sweep = load_sweep(path)
    evaluation = evaluation or evaluation_of(sweep)
    spec = _spec(sweep)
    work = plan(sweep, evaluation)
    where = cluster_address(sweep, address)
    n_trials = sum(len(g["jobs"]) - 1 for g in work.groups)
    print(f"Evaluating {' + '.join(g['label'] for g in work.groups)} and {n_trials} trial(s) on "
          f"{len(work.data['rows'])} held-out pairs, {len(work.data['prompts'])} sample prompt(s), "
          f"{len(work.data['sets'])} multiple-choice set(s) "
          f"({'as Ray tasks on ' + where if where else 'inline on this machine'})", file=out, flush=True)  # fmt: skip
    for key, reason in work.skipped.items():
        print(f"  {key}: skipped, {reason}", file=out)
    started = time.monotonic()
    common = {"max_length": spec.data.max_length, "batch_size": evaluation.batch_size,
              "cpus": spec.resources.cpus_per_trial, "data": work.data}  # fmt: skip
    records = run_ray(work, common, where) if where else run_inline(work, common, out)
    records.update(follow_up(work, common, where, records))
    for key, reason in work.skipped.items():
        records[key] = {"status": "skipped", "key": key, "reason": reason}
    save(sweep, work, records)
    for line in summary_lines(sweep, work, records):
        print(line, file=out)
    reports = reports_dir or Path(((sweep.meta.get("spec") or {}).get("output") or {}).get("reports_dir", "reports"))
    samples = write_samples(sweep, work, records, evaluation, reports)
    if samples is not None:
        print(f"Samples: {samples}", file=out)
    print(f"Evaluation took {time.monotonic() - started:.1f} s", file=out)
    return load_sweep(sweep.path)


def run_inline(work: Plan, common: dict[str, Any], out: TextIO | None = None) -> dict[str, dict[str, Any]]:
    """Every group's base loaded once in this process, its trials' adapters swapped in turn."""
    from sweeper.train.evaluate import run_jobs

    records: dict[str, dict[str, Any]] = {}
    total = sum(len(g["jobs"]) for g in work.groups)

    def progress(r: dict[str, Any]) -> None:  # one line per model as it ends: the evaluation takes minutes
        print(f"  [{len(records) + 1}/{total}] {r['key']}: {r.get('status')} in {float(r.get('seconds') or 0):.1f} s",
              file=out or sys.stdout, flush=True)  # fmt: skip
        records[r["key"]] = r

    for g in work.groups:
        for r in run_jobs({**common, "model": g["model"], "bf16": g["bf16"], "jobs": g["jobs"]}, progress):
            records[r["key"]] = r
    return records


def run_ray(work: Plan, common: dict[str, Any], address: str) -> dict[str, dict[str, Any]]:
    """One Ray task per trial (and per base), each holding a GPU when the cluster has any; adapters travel through
    the object store, so worker nodes need not see trials/."""
    from sweeper.train.evaluate import run_jobs
    from sweeper.tune.runtime import run_tasks

    payloads = [
        {
            **common,
            "model": g["model"],
            "bf16": g["bf16"],
            "jobs": [{**job, "files": _adapter_files(job["adapter"]) if job["adapter"] else None}],
        }
        for g in work.groups
        for job in g["jobs"]
    ]
    return {r["key"]: r for batch in run_tasks(run_jobs, payloads, address, common["cpus"]) for r in batch}


def _adapter_files(folder: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def follow_up(work: Plan, common: dict[str, Any], where: str | None,
              records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Samples of the held-out winner too, when it is not among the metric's top trials."""
    trials = {j["key"]: j for g in work.groups for j in g["jobs"][1:]}
    best = evalstats.heldout_winner({k: records.get(k) for k in trials})
    if best is None or best in work.sampled or not work.data["prompts"]:
        return {}
    work.sampled.append(best)
    group = next(g for g in work.groups if trials[best] in g["jobs"])
    job = {**trials[best], "preference": False, "choices": False, "generate": True}
    extra = Plan(data=work.data, groups=[{**group, "jobs": [job]}])
    found = run_ray(extra, common, where) if where else run_inline(extra, common)
    merged = {**records[best], "samples": found[best].get("samples"), "generation": found[best].get("generation")}
    return {best: merged}


def save(sweep: SweepRecord, work: Plan, records: dict[str, dict[str, Any]]) -> None:
    bases = [{**records[g["label"]], "label": g["label"], "model": g["model"].model_dump()} for g in work.groups]
    write_json(sweep.path / BASE_EVALUATION_FILE, bases)
    base_of = {j["key"]: g["label"] for g in work.groups for j in g["jobs"][1:]}
    for t in sweep.trials:
        if t.trial_id in records:
            write_json(t.path / EVALUATION_FILE, {**records[t.trial_id], "base": base_of.get(t.trial_id)})


def summary_lines(sweep: SweepRecord, work: Plan, records: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for g in work.groups:
        for job in g["jobs"]:
            r = records[job["key"]]
            if r.get("status") != "evaluated":
                lines.append(f"  {job['key']}: {r.get('status')}, {r.get('reason')}")
                continue
            p = r.get("preference") or {}
            text = f"  {job['key']}: held-out preference rate {_pct(p.get('rate'))}"
            text += f" (per token {_pct(p.get('rate_norm'))})"
            text += f", margin {p.get('margin_mean', 0):+.3g}"
            if p.get("reward_accuracy") is not None:
                text += f", reward accuracy {_pct(p['reward_accuracy'])}"
            for name, m in (r.get("multiple_choice") or {}).items():
                text += f", {name} {_pct(m.get('accuracy'))}"
            lines.append(text + f" ({r.get('seconds', 0):.1f} s)")
    metric, goal = metric_of(sweep)
    from sweeper.records.store import best_trial

    best = best_trial(sweep, metric, goal)
    a = evalstats.agreement(best.trial_id if best else None, records, records.get(work.groups[0]["label"]))
    if a is not None:
        lines.append(evalstats.agreement_line(a))
    return lines


def write_samples(sweep: SweepRecord, work: Plan, records: dict[str, dict[str, Any]], evaluation: EvaluationSection,
                  reports_dir: Path) -> Path | None:  # fmt: skip
    if not work.data["prompts"]:
        return None
    models = [(g["label"], records[g["label"]].get("samples") or []) for g in work.groups]
    models += [(f"`{k}`", records[k].get("samples") or []) for k in work.sampled if records.get(k)]
    model = (sweep.meta.get("spec") or {}).get("model") or {}
    text = evalstats.samples_text(sweep.name, work.data["prompts"], models, evaluation.max_new_tokens, evaluation.seed,
                                  random_model=model.get("name_or_path") == "builtin:tiny-mistral")  # fmt: skip
    path = reports_dir / sweep.name / SAMPLES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"
