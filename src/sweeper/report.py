"""The sweep report: a pure function of the loaded records (rendering) and a thin writer.

Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.space import effective_batch, trial_settings
from sweeper.spec import Spec
from sweeper.store import SweepRecord, TrialRecord, best_trial

REPORT_METRICS = ("rewards/margins", "rewards/accuracies", "loss")


def render_report(sweep: SweepRecord) -> str:
    meta = sweep.meta
    metric = meta.get("metric", {}).get("name", "rewards/margins")
    goal = meta.get("metric", {}).get("goal", "maximize")
    best = best_trial(sweep, metric, goal)
    lines = [f"# Sweep report: {sweep.name}", ""]
    lines += _header(sweep)
    lines += ["", "## Best trial", ""]
    lines += _verdict(sweep, best, metric, goal)
    lines += ["", "## Trials", ""]
    lines += _table(sweep, best, metric)
    errors = [t for t in sweep.trials if t.status == "error"]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- `{t.trial_id}`: {_last_line(t.error)} (traceback: `{t.path.name}/error.txt`)" for t in errors]
    return "\n".join(lines) + "\n"


def write_report(sweep: SweepRecord, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    out = reports_dir / f"{sweep.name}.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(render_report(sweep), encoding="utf-8")
    tmp.replace(out)
    return out


def _header(sweep: SweepRecord) -> list[str]:
    meta = sweep.meta
    spec = meta.get("spec", {})
    model = spec.get("model", {})
    data = meta.get("data", {})
    counts = ", ".join(f"{n} {status}" for status, n in sorted(sweep.by_status().items())) or "none yet"
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    rows = [
        ("Spec", f"`{meta.get('spec_path', '?')}` (sha256 `{meta.get('spec_hash', '?')}`)"),
        ("Method", f"{spec.get('method', '?')}, metric `{meta.get('metric', {}).get('name')}` "
                   f"({meta.get('metric', {}).get('goal')})"),  # fmt: skip
        ("Model", f"`{model.get('name_or_path', '?')}`, quantization {model.get('quantization', '?')}, "
                  f"LoRA r={model.get('lora', {}).get('r')}"),  # fmt: skip
        ("Data", f"`{spec.get('data', {}).get('path', '?')}` ({spec.get('data', {}).get('format')}): "
                 f"{data.get('rows', '?')}; {data.get('n_train', '?')} train / {data.get('n_test', '?')} held out"),
        ("Hardware", meta.get("host", {}).get("hardware", "?")),
        ("Versions", versions or "?"),
        ("Git commit", f"`{meta.get('git_commit') or 'not a git checkout'}`"),
        ("Started / finished", f"{meta.get('started_at', '?')} / {meta.get('finished_at') or 'not finished'}"),
        ("Trials", counts),
    ]
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def _verdict(sweep: SweepRecord, best: TrialRecord | None, metric: str, goal: str) -> list[str]:
    if best is None:
        return [f"No completed trial reported `{metric}`: no winner."]
    value = best.value(metric)
    others = sorted(
        (v for t in sweep.trials if t is not best and t.status == "completed" and (v := t.value(metric)) is not None),
        reverse=goal == "maximize",
    )
    line = f"**`{best.trial_id}`** ({_params_text(best.params)}): final `{metric}` = {_fmt(value)}"
    if others and value is not None:
        line += f", {_fmt(abs(value - others[0]))} ahead of the runner-up ({_fmt(others[0])})."
    else:
        line += " (the only completed trial)."
    lines = [line]
    if best.adapter is not None:
        lines += ["", f"Adapter: `{best.adapter.relative_to(sweep.path.parent)}`"]
    return lines


def _table(sweep: SweepRecord, best: TrialRecord | None, metric: str) -> list[str]:
    swept = list(sweep.meta.get("swept", []))
    spec = _spec(sweep)
    metrics = list(dict.fromkeys([metric, *REPORT_METRICS]))
    head = ["trial", *swept, "effective batch", "status", "steps", "examples", *metrics, "wall s", "peak memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in sweep.trials:
        mark = " ★" if t is best else ""
        cells = [f"`{t.trial_id}`{mark}", *[_fmt(t.params.get(n)) for n in swept]]
        cells.append(str(effective_batch(trial_settings(spec, t.params)["training"])) if spec else "?")
        cells += [t.status, _fmt(t.final.get("sweeper/step")), _fmt(t.final.get("sweeper/examples_seen"))]
        cells += [_fmt(t.value(m)) for m in metrics]
        cells += [_fmt(t.final.get("sweeper/elapsed_s")), _memory(t.final)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _spec(sweep: SweepRecord) -> Spec | None:
    try:
        return Spec.model_validate(sweep.meta["spec"])
    except Exception:  # noqa: BLE001 - an old or hand-edited sweep.json still renders, without derived columns
        return None


def _memory(final: dict[str, Any]) -> str:
    if "sweeper/cuda_max_reserved_mb" in final:
        alloc = final["sweeper/cuda_max_allocated_mb"] / 1024
        reserved = final["sweeper/cuda_max_reserved_mb"] / 1024
        return f"{alloc:.1f} / {reserved:.1f} GiB (CUDA alloc / reserved)"
    if "sweeper/peak_rss_mb" in final:
        return f"{final['sweeper/peak_rss_mb']:.0f} MiB RSS"
    return "-"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "no swept parameters"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "unknown error"
