"""The sweep report: a pure function of the loaded records (rendering) and a thin writer.

``render_report(sweep, plots)`` reads no clock and no file: the plots it references are named by the
caller (``write_report`` draws them first, into reports/<name>/). Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.errors import last_line
from sweeper.records.files import write_text_atomic
from sweeper.records.metrics import BEST_METRIC, BEST_STEP, GPU_NAME, STEP
from sweeper.records.store import STATUSES, SweepRecord, TrialRecord, best_trial
from sweeper.report.evalstats import base_of, degenerate_flag, has_evaluation, heldout_section, verdict_line
from sweeper.report.sensitivity import sensitivity, sensitivity_lines
from sweeper.report.summary import (
    BEST_OF,
    MIN_STEPS,
    accounting,
    best_per_beta,
    compute,
    final_metrics,
    guard_of,
    metric_of,
    runner_up,
    trial_rows,
)
from sweeper.report.tables import table

# Relative difference under which the winner and the runner-up are called a tie.
TIE = 0.01
SHORT = {"rewards/margins": "margins", "rewards/accuracies": "accuracies", "logps/chosen": "logps/chosen",
         "logps/rejected": "logps/rejected", "eval_rewards/margins": "eval margins",
         "eval_rewards/accuracies": "eval accuracies", "eval_loss": "eval loss"}  # fmt: skip


def render_report(sweep: SweepRecord, plots: Sequence[str] = ()) -> str:
    """The report's markdown; ``plots`` names the figures drawn under reports/<name>/ (see sweeper.report.plots)."""
    metric, goal = metric_of(sweep)
    best = best_trial(sweep, metric, goal)
    lines = [f"# Sweep report: {sweep.name}", "", *header(sweep)]
    lines += ["", "## Verdict", "", *verdict(sweep, best, metric, goal)]
    lines += ["", "## Trials", "", *summary_table(sweep, best)]
    if has_evaluation(sweep):
        lines += ["", "## Held-out evaluation", "", *heldout_section(sweep, best)]
    sens = sensitivity_lines(sensitivity(sweep, metric, goal), metric)
    if sens:
        lines += ["", "## Sensitivity", "", *sens]
        if "slices" in plots:
            lines += ["", f"![slices]({sweep.name}/slices.png)"]
    flats = flat_lines(sweep)
    if plots or flats:
        body = [*plot_lines(sweep, plots), *flats]
        lines += ["", "## Plots", "", *(body[1:] if body and body[0] == "" else body)]
    lines += ["", "## Compute", "", *compute_lines(sweep)]
    if "compute" in plots:
        lines += ["", f"![compute]({sweep.name}/compute.png)"]
    failed = [t for t in sweep.trials if t.status in ("oom", "error", "unfinished")]
    if failed:
        lines += ["", "## Failures", "", *[failure_line(t) for t in failed]]
    lines += ["", "## Details", "", "Every column of the trials (also in `trials.csv` / `trials.parquet` beside the "
              "records):", "", "<details><summary>all columns</summary>", "", *trials_table(sweep, best), "",
              "</details>"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(sweep: SweepRecord, reports_dir: Path) -> Path:
    """Write reports/<name>.md with its plots in reports/<name>/, and trials/<name>/trials.csv|parquet."""
    from sweeper.report.plots import write_plots
    from sweeper.report.summary import export_tables

    reports_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(sweep, reports_dir / sweep.name)
    export_tables(sweep)
    out = reports_dir / f"{sweep.name}.md"
    write_text_atomic(out, render_report(sweep, plots))
    return out


def header(sweep: SweepRecord) -> list[str]:
    meta = sweep.meta
    spec = meta.get("spec") or {}
    model = spec.get("model") or {}
    data = meta.get("data") or {}
    versions = ", ".join(f"{k} {v}" for k, v in sorted((meta.get("versions") or {}).items()))
    wall = f" ({fmt(meta['wall_s'])} s)" if meta.get("wall_s") is not None else ""
    phases = [f"{name} {fmt(s)} s" for name, s in meta.get("phases") or [] if s >= 0.1]
    if phases:
        wall = f" ({fmt(meta['wall_s'])} s: {', '.join(phases)})"
    rows = [
        ("Spec", f"`{meta.get('spec_path', '?')}` (sha256 `{meta.get('spec_hash', '?')}`)"),
        ("Method", f"{spec.get('method', '?')}, metric `{metric_of(sweep)[0]}` ({metric_of(sweep)[1]})"),
        (
            "Model",
            f"`{model.get('name_or_path', '?')}`, quantization {model.get('quantization', '?')}, "
            f"LoRA r={(model.get('lora') or {}).get('r')}",
        ),
        (
            "Data",
            f"`{(spec.get('data') or {}).get('path', '?')}` ({(spec.get('data') or {}).get('format')}): "
            f"{data.get('rows', '?')}; {data.get('n_train', '?')} train / {data.get('n_test', '?')} held out",
        ),
        *([("max_length", cut)] if (cut := length_text(data.get("lengths"))) else []),
        ("Hardware", hardware(sweep)),
        ("Versions", versions or "?"),
        ("Git commit", f"`{meta.get('git_commit') or 'not a git checkout'}`"),
        ("Started / finished", f"{meta.get('started_at', '?')} / {meta.get('finished_at') or 'not finished'}{wall}"),
        ("Trials", status_counts(sweep)),
    ]
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def length_text(lengths: Any) -> str | None:
    """What data.max_length did to the pairs (recorded by launch), e.g. ``73 of 244 train pairs dropped ...``."""
    if not isinstance(lengths, dict) or not lengths:
        return None
    if not any(got.get("dropped") or got.get("truncated") for got in lengths.values()):
        return f"{next(iter(lengths.values())).get('max_length')} tokens: no pair dropped, no answer cut"
    parts = [f"{got.get('dropped', 0)} of {got.get('n', 0)} {name} pairs dropped (prompt alone fills "
             f"{got.get('max_length')} tokens), {got.get('truncated', 0)} with an answer cut"
             for split, name in (("train", "train"), ("test", "held-out")) if (got := lengths.get(split))]  # fmt: skip
    return "; ".join(parts) or None


def hardware(sweep: SweepRecord) -> str:
    text = str((sweep.meta.get("host") or {}).get("hardware", "?"))
    gpus = sorted({str(t.final[GPU_NAME]) for t in sweep.trials if t.final.get(GPU_NAME)})
    if gpus:
        text += f" ({', '.join(gpus)})"
    acct = accounting(sweep)
    return f"{text}; {fmt(acct.per_trial)} {acct.unit} per trial"


def status_counts(sweep: SweepRecord) -> str:
    counts = sweep.by_status()
    shown = [s for s in STATUSES if s != "unfinished" or counts.get(s)]
    text = ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)
    planned = sweep.meta.get("n_planned")
    return f"{text} (of {planned} planned)" if planned is not None else text


def verdict(sweep: SweepRecord, best: TrialRecord | None, metric: str, goal: str) -> list[str]:
    if best is None:
        return [f"No completed trial reported `{metric}`: no winner."]
    value = best.value(metric)
    line = f"**`{best.trial_id}`** ({_params_text(best.params)}): final `{metric}` = {fmt(value)}"
    second = runner_up(sweep, best, metric, goal)
    second_value = second.value(metric) if second is not None else None
    if second is not None and value is not None and second_value is not None:
        line += (f", {fmt(abs(value - second_value))} ahead of the runner-up `{second.trial_id}` "
                 f"({fmt(second_value)}).")  # fmt: skip
    else:
        line += " (the only completed trial)."
    lines = [line]
    warnings = verdict_warnings(best, value, second_value)
    tie = noise_tie(best, second, metric)
    if tie:
        warnings.append(tie)
    degenerate = degenerate_flag(best.evaluation, base_of(sweep, best.evaluation))
    if degenerate:
        warnings.append(f"{degenerate}: its greedy answers degenerate where the base's do not (see samples.md); a "
                        "higher margin bought with broken generations is not a better model.")  # fmt: skip
    beta = beta_warning(best, best_per_beta(sweep, metric, goal), metric)
    if beta:
        warnings.append(beta)
    if warnings:
        lines += ["", *[f"- ⚠ {w}" for w in warnings]]
    heldout = verdict_line(sweep, best)
    if heldout:
        lines += ["", heldout]
    if best.adapter is not None:
        lines += ["", f"Adapter: `{adapter_path(sweep, best)}` (from the directory the sweep was launched in)"]
    return lines


def noise_tie(best: TrialRecord, second: TrialRecord | None, metric: str) -> str | None:
    """A warning when the runner-up's final level is within two standard errors of the winner's (the noise of
    their own curves), or None."""
    from sweeper.report.evidence import final_gap_sd

    if second is None:
        return None
    a = [float(r[metric]) for r in best.curve if isinstance(r.get(metric), int | float)]
    b = [float(r[metric]) for r in second.curve if isinstance(r.get(metric), int | float)]
    sd = final_gap_sd(a, b)
    if sd is None or not a or not b:
        return None
    gap = abs(sum(a[-5:]) / len(a[-5:]) - sum(b[-5:]) / len(b[-5:]))
    if gap > 2 * sd:
        return None
    return (f"the runner-up `{second.trial_id}` is within the noise: their final levels (mean of the last 5 logged "
            f"values) differ by {fmt(gap)}, under 2 standard errors ({fmt(2 * sd)}) of their own curves' noise: "
            "treat the two as a tie.")  # fmt: skip


def adapter_path(sweep: SweepRecord, trial: TrialRecord) -> str:
    """The winner's adapter as a path from the directory the sweep was launched in (output.trials_dir/name/...),
    so it resolves where the user runs ``launch``; records moved elsewhere show their path from the sweep's
    parent folder."""
    assert trial.adapter is not None
    trials_dir = ((sweep.meta.get("spec") or {}).get("output") or {}).get("trials_dir", "trials")
    inside = trial.adapter.relative_to(sweep.path)
    return str(Path(trials_dir) / sweep.name / inside)


def verdict_warnings(best: TrialRecord, value: float | None, second: float | None) -> list[str]:
    """What qualifies the winner: the margin-hacking guard, OOM retries, a short run, a near tie."""
    out = []
    guard = guard_of(best)
    if guard and guard != "ok":
        out.append(f"margin-hacking guard: {guard}. A large margin with a collapsed loss can come from pushing "
                   "rejected log-probs down rather than learning; check logps/chosen before trusting it.")  # fmt: skip
    ooms = [a for a in best.attempts if a.get("status") == "oom"]
    if ooms:
        last = best.attempts[-1]
        out.append(f"ran after {len(ooms)} out-of-memory attempt(s): finished at per-device batch "
                   f"{last.get('per_device_train_batch_size')} × accumulation {last.get('gradient_accumulation_steps')}"
                   f" (effective batch {last.get('effective_batch', '?')}).")  # fmt: skip
    steps = best.value(STEP)
    if steps is not None and steps < MIN_STEPS:
        out.append(f"only {fmt(steps)} optimizer steps (fewer than {MIN_STEPS}): this ranks early training, "
                   "not where the trials would end.")  # fmt: skip
    if value is not None and second is not None and abs(value - second) <= TIE * max(abs(value), abs(second)):
        out.append(f"the runner-up is within {TIE:.0%}: treat the two as a tie.")
    return out


def beta_warning(best: TrialRecord, per_beta: tuple[TrialRecord, float] | None, metric: str) -> str | None:
    """beta is swept and the metric is beta × a log-ratio: say so, and who leads on the metric ÷ beta."""
    if per_beta is None:
        return None
    leader, scaled = per_beta
    text = (f"beta is swept and `{metric}` is beta × a log-ratio: at the same fit a larger beta scores higher, "
            "so trials of different beta are not comparable on it.")  # fmt: skip
    if leader is best:
        return text + f" Divided by beta ({fmt(scaled)}) this trial still leads."
    own = (best.value(metric) or 0.0) / float(best.params["beta"])
    return (text + f" Divided by beta, `{leader.trial_id}` (beta={fmt(leader.params['beta'])}) leads with "
            f"{fmt(scaled)} against {fmt(own)}; compare trials of equal beta, or on rewards/accuracies or the "
            "held-out preference rate (`evaluation:`).")  # fmt: skip


def summary_table(sweep: SweepRecord, best: TrialRecord | None) -> list[str]:
    """At most ~10 columns: trial, swept values, status, the metric's final value, held-out rate, guard,
    GPU-hours (CPU-hours without GPUs), peak memory. Everything else is in the Details section."""
    metric, _ = metric_of(sweep)
    rows = trial_rows(sweep)
    acct = accounting(sweep)
    swept = list(sweep.meta.get("swept", []))
    columns: list[tuple[str, Any]] = [(n, lambda r, n=n: fmt(r[n])) for n in swept]
    columns += [
        (
            "status",
            lambda r: (
                r["status"]
                + (f" at {fmt(r['stopped_examples'])} ex" if r["status"] == "pruned" else "")
                + (f" ({r['attempts']} attempts)" if r["attempts"] > 1 else "")
            ),
        ),
        (f"{SHORT.get(metric, metric)} final", lambda r: fmt(r[metric]) if metric in r else "-"),
    ]
    if any(r.get("heldout_pref_rate") is not None for r in rows):
        columns.append(("held-out pref rate", lambda r: "-" if r.get("heldout_pref_rate") is None
                        else f"{r['heldout_pref_rate']:.0%}"))  # fmt: skip
    if any(r["guard"] for r in rows):
        columns.append(("guard", lambda r: "ok" if (r["guard"] or "ok") == "ok" else "⚠ flagged"))
    columns += [(f"{acct.unit}-h", lambda r: fmt(r[f"{acct.unit.lower()}_hours"])), ("peak memory", memory_cell)]
    head = ["trial", *[c[0] for c in columns]]
    cells = [[f"`{t.trial_id}`{' ★' if t is best else ''}", *[fn(r) for _, fn in columns]]
             for t, r in zip(sweep.trials, rows, strict=True)]  # fmt: skip
    return table(head, cells)


def trials_table(sweep: SweepRecord, best: TrialRecord | None) -> list[str]:
    metric, _ = metric_of(sweep)
    rows = trial_rows(sweep)
    acct = accounting(sweep)
    swept = list(sweep.meta.get("swept", []))
    finals = final_metrics(sweep)
    bests = list(dict.fromkeys([metric, *BEST_OF]))
    columns: list[tuple[str, Any]] = [(n, lambda r, n=n: fmt(r[n])) for n in swept]
    columns += [
        ("effective batch", lambda r: fmt(r["effective_batch"])),
        ("status", lambda r: r["status"] + (f" ({r['attempts']} attempts)" if r["attempts"] > 1 else "")),
        ("stopped at (examples)", lambda r: "end" if r["status"] == "completed" else fmt(r["stopped_examples"])),
    ]
    for name in finals:
        columns.append((f"{SHORT.get(name, name)} final", lambda r, n=name: fmt(r[n])))
        if name in bests:
            columns.append((f"{SHORT.get(name, name)} best", lambda r, n=name: fmt(r[f"best {n}"])))
    if any(r["guard"] for r in rows):
        columns.append(("guard", lambda r: r["guard"] or "-"))
    hours = f"{acct.unit.lower()}_hours"
    columns += [
        ("examples seen", lambda r: fmt(r["examples_seen"])),
        ("wall s", lambda r: fmt(r["wall_s"])),
        (f"{acct.unit}-h", lambda r: fmt(r[hours])),
    ]
    if acct.usd_per_hour is not None:
        columns.append((f"$ at {acct.usd_per_hour:g}/h", lambda r: usd(r["cost_usd"])))
    columns.append(("peak memory", memory_cell))
    if any(r["predicted_peak_gb"] is not None for r in rows):
        columns.append(("predicted GPU peak", lambda r: gib(r["predicted_peak_gb"])))
    head = ["trial", *[c[0] for c in columns]]
    cells = [[f"`{t.trial_id}`{' ★' if t is best else ''}", *[fn(r) for _, fn in columns]]
             for t, r in zip(sweep.trials, rows, strict=True)]  # fmt: skip
    return table(head, cells)


def memory_cell(row: dict[str, Any]) -> str:
    if row["cuda_max_reserved_mb"] is not None and row["cuda_max_allocated_mb"] is not None:
        return f"{row['cuda_max_allocated_mb'] / 1024:.1f} / {row['cuda_max_reserved_mb'] / 1024:.1f} GiB alloc/res"
    if row["peak_rss_mb"] is not None:
        return f"{row['peak_rss_mb']:.0f} MiB RSS"
    return "-"


def plot_lines(sweep: SweepRecord, plots: Sequence[str]) -> list[str]:
    from sweeper.report.plots import PLOTS

    lines: list[str] = []
    for name in plots:
        if name in ("slices", "compute"):  # shown in the Sensitivity and Compute sections
            continue
        lines += [f"![{name}]({sweep.name}/{name}.png)", "", f"*{PLOTS.get(name, name)}*", ""]
    return lines[:-1]


def flat_lines(sweep: SweepRecord) -> list[str]:
    """The curves not drawn because they settle on one value in every trial, said in words."""
    out = []
    for metric in ("rewards/margins", "rewards/accuracies", "eval_rewards/accuracies"):
        line = flat_line(sweep, metric)
        if line is not None:
            out += ["", line]
    return out


def flat_line(sweep: SweepRecord, metric: str) -> str | None:
    """Why a metric's curves are not drawn (it settles on one value in every trial), or None when they are."""
    from sweeper.report.figdata import flat_value

    flat = flat_value(sweep, metric)
    if flat is None:
        return None
    return (f"`{metric}` is {fmt(flat[0])} in every trial from {fmt(flat[1])} examples seen on at the latest: not "
            "drawn, it cannot tell the trials apart (compare them on margins or held-out evaluation).")  # fmt: skip


def compute_lines(sweep: SweepRecord) -> list[str]:
    c = compute(sweep)
    acct = accounting(sweep)
    unit = f"{c.unit}-hours"
    spent = f"- Spent: {fmt(c.spent_h)} {unit} ({fmt(acct.per_trial)} {c.unit} per trial × trial wall time)"
    dollars = c.usd(c.spent_h)
    lines = [spent + (f", {usd(dollars)} at ${c.usd_per_hour:g} per GPU-hour." if dollars is not None else ".")]
    if c.extra_h:  # the sweep's work outside the trials, at one trial's devices x its wall time
        around = ", ".join(f"{fmt(h)} {unit} on {name}" for name, h in c.extra_h.items())
        total = c.spent_h + sum(c.extra_h.values())
        lines.append(f"- Besides the trials: {around}; {fmt(total)} {unit} in all.")
    if c.n_pruned:
        share = c.saved_h / c.full_h if c.full_h else 0.0
        saved_usd = c.usd(c.saved_h)
        lines.append(f"- Saved by pruning: {fmt(c.saved_h)} {unit}" + (f" ({usd(saved_usd)})" if saved_usd else "")
                     + f" and {c.saved_examples} examples over {c.n_pruned} pruned trial(s): running every trial to"
                     f" the end would have taken {fmt(c.full_h)} {unit}; pruning saved {share:.0%}.")  # fmt: skip
    else:
        lines.append("- Saved by pruning: nothing, no trial was pruned.")
    lines += pause_lines(sweep)
    lines += peak_lines(sweep)
    ooms = sum(1 for t in sweep.trials for a in t.attempts if a.get("status") == "oom")
    if ooms:
        lines.append(f"- Out-of-memory attempts: {ooms} (each retried with a smaller per-device batch, or given up).")
    return lines


def pause_lines(sweep: SweepRecord) -> list[str]:
    """``on_prune: pause``: each trial that was paused, with what happened to it after (events.json), in order."""
    paused = [t for t in sweep.trials if any(e.get("event") == "paused" for e in t.events)]
    if not paused:
        return []
    resumed = sum(1 for t in paused if any(e.get("event") == "resumed" for e in t.events))
    lines = [f"- Paused below the bar: {len(paused)} trial(s), {resumed} of them resumed (`<trial>/events.json`):"]
    for t in paused:
        story = "; ".join(f"{e.get('event')} at {e.get('examples_seen')} examples ({e.get('reason') or 'no reason'})"
                          for e in t.events)  # fmt: skip
        end = {"completed": "then ran to its end", "pruned": "then pruned for good"}.get(t.status, t.status)
        lines.append(f"  - `{t.trial_id}`: {story}; {end}")
    return lines


def peak_lines(sweep: SweepRecord, metric: str = "eval_rewards/margins") -> list[str]:
    """Where each evaluated trial peaked on the held-out metric, and what stopping every trial there would have
    saved (direct alignment methods often over-optimize well before the end); trials that early stopping
    ended are named with the checkpoint they kept."""
    from sweeper.report.figdata import curve_points

    peaks, after, total = [], 0, 0
    for t in sweep.trials:
        pts = sorted({int(x): y for x, y in curve_points(t, metric)}.items())  # the last value at each point
        if len(pts) < 3:
            continue
        at, value = max(pts, key=lambda p: p[1])
        end = pts[-1][0]
        peaks.append((t, at, value, end))
        after += end - at
        total += end
    if not peaks:
        return []
    early = [t for t in sweep.trials if t.value(BEST_STEP) is not None]
    lines = [f"- Held-out peaks (`{metric}`): {len([p for p in peaks if p[1] < p[3]])} of {len(peaks)} evaluated "
             f"trial(s) peaked before their last evaluation; stopping each at its peak would have saved {after} of "
             f"{total} examples ({after / total:.0%})." if total else ""]  # fmt: skip
    for t, at, value, end in peaks:
        if at < end:
            lines.append(f"  - `{t.trial_id}`: peaked at {at} examples ({fmt(value)}), ran to {end}")
    for t in early:
        lines.append(f"- `{t.trial_id}` ended early (early_stopping_patience) at step {fmt(t.value(STEP))} and kept "
                     f"its step-{fmt(t.value(BEST_STEP))} checkpoint ({fmt(t.value(BEST_METRIC))}).")  # fmt: skip
    return [ln for ln in lines if ln]


def failure_line(t: TrialRecord) -> str:
    if t.status == "oom":
        tried = ", ".join(f"batch {a.get('per_device_train_batch_size')}" for a in t.attempts)
        return f"- `{t.trial_id}`: out of memory at every attempt ({tried or 'no attempt recorded'})"
    if t.status == "unfinished":
        return f"- `{t.trial_id}`: unfinished (no final result and no error: still running, or the driver stopped)"
    return f"- `{t.trial_id}`: {last_line(t.error)} (traceback: `{t.path.name}/error.txt`)"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "no swept parameters"


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GiB"


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
