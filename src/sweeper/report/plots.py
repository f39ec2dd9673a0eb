"""The report's figures (PNG, matplotlib): written to reports/<name>/, referenced by the report by name.

matplotlib is imported inside ``write_plots`` with the Agg backend (no display needed).
Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.records.metrics import CUDA_MAX_RESERVED_MB, ELAPSED_S, EXAMPLES_SEEN, PEAK_RSS_MB, PREDICTED_PEAK_GB
from sweeper.records.store import SweepRecord, TrialRecord
from sweeper.report.summary import MARGINS, batch_of, learning_rate_of, metric_of

# name -> what it shows (the report's caption); the order of the report's "Plots" section
PLOTS = {
    "margins": "`rewards/margins` against examples seen, one panel per value of a swept parameter, coloured by "
    "another (the learning rate where swept); the winner bold; × marks where a trial was pruned (faded), ■ where "
    "it failed",
    "accuracies": "`rewards/accuracies` against examples seen, panels and colours as above",
    "eval_margins": "held-out `eval_rewards/margins` (TRL's evaluation every `eval_steps`) against examples seen, "
    "panels and colours as above",
    "memory": "peak memory against per-device batch: on GPUs measured (●, CUDA reserved) and predicted (○); on "
    "CPUs the measured RSS only (GPU predictions are in the trials table); out of memory (×)",
    "lr_batch": "final value of the sweep's metric by learning rate and effective batch",
    "parallel": "parallel coordinates: each completed trial's swept values and final metric, coloured by the metric "
    "(the winner bold)",
    "timeline": "trials over the sweep's wall-clock time, coloured by how they ended (hatched: out-of-memory "
    "retries): how well the hardware was used",
    "slices": "final value of the sweep's metric against each swept parameter (completed trials), coloured by "
    "another swept parameter: how sensitive the sweep is to each",
}
STATUS_MARKS = {"pruned": "x", "oom": "s", "error": "s", "unfinished": "s"}


def write_plots(sweep: SweepRecord, out_dir: Path) -> list[str]:
    """Draw every plot the records allow into out_dir; return the names drawn (keys of PLOTS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    drawers = {
        "margins": lambda ax: _curves(ax, sweep, MARGINS),
        "accuracies": lambda ax: _curves(ax, sweep, "rewards/accuracies"),
        "eval_margins": lambda ax: _curves(ax, sweep, "eval_rewards/margins"),  # only where trials evaluated
        "memory": lambda ax: _memory(ax, sweep),
        "lr_batch": lambda ax: _heatmap(ax, sweep),
        "parallel": lambda ax: _parallel(ax, sweep),
        "timeline": lambda ax: _timeline(ax, sweep),
    }
    drawn = []
    for name, metric in (("margins", MARGINS), ("accuracies", "rewards/accuracies"),
                         ("eval_margins", "eval_rewards/margins")):  # fmt: skip
        drawers.pop(name)
        if flat_value(sweep, metric) is None and _faceted_curves(plt, sweep, metric, out_dir / f"{name}.png"):
            drawn.append(name)
    if _slices(plt, sweep, out_dir / "slices.png"):
        drawn.append("slices")
    for name, draw in drawers.items():
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        try:
            if draw(ax):
                fig.tight_layout()
                fig.savefig(out_dir / f"{name}.png", metadata={"Software": None})
                drawn.append(name)
        finally:
            plt.close(fig)
    return drawn


def _curves(ax: Any, sweep: SweepRecord, metric: str) -> bool:
    drawn = False
    for t in sweep.trials:
        points = curve_points(t, metric)
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        (line,) = ax.plot(xs, ys, marker=".", linewidth=1.2, label=_label(t))
        drawn = True
        end = stop_point(t, metric, points)
        if end is not None:
            ax.plot(*end, marker=STATUS_MARKS[t.status], markersize=10, color=line.get_color(),
                    markeredgewidth=2, linestyle="none")  # fmt: skip
    if not drawn:
        return False
    ax.set_xlabel("examples seen")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return True


def _memory(ax: Any, sweep: SweepRecord) -> bool:
    measured, predicted, oom = [], [], []
    for t in sweep.trials:
        batch, _ = batch_of(t)
        peak = peak_gib(t)
        if batch is not None and peak is not None:
            measured.append((batch, peak))
        if batch is not None and t.value(PREDICTED_PEAK_GB) is not None:
            predicted.append((batch, t.value(PREDICTED_PEAK_GB)))
        oom += [a["per_device_train_batch_size"] for a in t.attempts
                if a.get("status") == "oom" and a.get("per_device_train_batch_size") is not None]  # fmt: skip
    on_gpu = _on_gpu(sweep)
    if not on_gpu:
        predicted = []  # a GPU prediction never shares an axis with CPU RSS (the trials table keeps both apart)
    if not measured and not predicted:
        return False
    if measured:
        what = "measured GPU peak (CUDA reserved)" if on_gpu else "measured CPU peak RSS"
        ax.scatter(*zip(*measured, strict=True), label=what, zorder=3)
    if predicted:
        ax.scatter(*zip(*predicted, strict=True), facecolors="none", edgecolors="C1", label="predicted GPU peak",
                   zorder=3)  # fmt: skip
    if oom:
        top = max(y for _, y in [*measured, *predicted])
        ax.scatter(oom, [top * 1.05] * len(oom), marker="x", color="C3", s=60, label="out of memory", zorder=3)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib_ticker().ScalarFormatter())
    ax.set_xlabel("per-device batch")
    ax.set_ylabel("GPU memory, GiB" if on_gpu else "CPU memory (RSS), GiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return True


def _heatmap(ax: Any, sweep: SweepRecord) -> bool:
    metric, goal = metric_of(sweep)
    cells: dict[tuple[float, int], float] = {}
    for t in sweep.trials:
        lr, (batch, accumulation), value = learning_rate_of(t), batch_of(t), t.value(metric)
        if lr is None or batch is None or accumulation is None or value is None:
            continue
        key = (lr, batch * accumulation)
        better = max if goal == "maximize" else min
        cells[key] = better(cells[key], value) if key in cells else value
    if not cells:
        return False
    lrs = sorted({k[0] for k in cells})
    batches = sorted({k[1] for k in cells})
    grid = [[cells.get((lr, b), float("nan")) for lr in lrs] for b in batches]
    image = ax.imshow(grid, cmap="viridis" if goal == "maximize" else "viridis_r", aspect="auto", origin="lower")
    for (lr, b), value in cells.items():
        ax.text(lrs.index(lr), batches.index(b), f"{value:.3g}", ha="center", va="center", color="white",
                fontsize=9, bbox={"facecolor": "black", "alpha": 0.4, "linewidth": 0})  # fmt: skip
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("effective batch")
    ax.figure.colorbar(image, ax=ax, label=f"final {metric}")
    return True


def _parallel(ax: Any, sweep: SweepRecord) -> bool:
    """Parallel coordinates of the swept parameters and the final metric (completed trials)."""
    import math

    import matplotlib

    from sweeper.records.store import best_trial

    metric, goal = metric_of(sweep)
    swept = [n for n in sweep.meta.get("swept", []) if n]
    done = [t for t in sweep.trials if t.status == "completed" and isinstance(t.value(metric), int | float)]
    if not swept or len(done) < 2:
        return False
    axes = [*swept, metric]
    columns = []
    for name in axes:
        values = [t.params.get(name) if name != metric else float(t.value(metric)) for t in done]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric and name != metric and min(values) > 0 and max(values) / min(values) >= 10:
            scaled = [math.log10(v) for v in values]
        elif numeric:
            scaled = [float(v) for v in values]
        else:
            levels = _ordered(values)
            scaled = [float(levels.index(v)) for v in values]
        lo, hi = min(scaled), max(scaled)
        columns.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in scaled])
        ax.text(len(columns) - 1, -0.08, f"{min(values):.3g}" if numeric else str(_ordered(values)[0]), ha="center",
                va="top", fontsize=7)  # fmt: skip
        ax.text(len(columns) - 1, 1.04, f"{max(values):.3g}" if numeric else str(_ordered(values)[-1]), ha="center",
                va="bottom", fontsize=7)  # fmt: skip
    finals = columns[-1]
    best = best_trial(sweep, metric, goal)
    cmap = matplotlib.colormaps["viridis"]
    for i, t in enumerate(done):
        ys = [c[i] for c in columns]
        winner = best is not None and t.trial_id == best.trial_id
        shade = cmap(finals[i] if goal == "maximize" else 1 - finals[i])
        ax.plot(range(len(axes)), ys, color="black" if winner else shade, linewidth=2.6 if winner else 1.2,
                alpha=1.0 if winner else 0.8, zorder=3 if winner else 2)  # fmt: skip
    for x in range(len(axes)):
        ax.axvline(x, color="grey", linewidth=0.8, zorder=1)
    ax.set_xticks(range(len(axes)), [f"final {a}" if a == metric else a for a in axes], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    ax.set_xlim(-0.2, len(axes) - 0.8)
    return True


def _timeline(ax: Any, sweep: SweepRecord) -> bool:
    """One bar per trial from its first to its last result on the sweep's clock, coloured by status."""
    colours = {"completed": "C2", "pruned": "C1", "oom": "C3", "error": "C3", "unfinished": "C7"}
    spans = []
    for t in sweep.trials:
        stamps = [(float(r["timestamp"]), float(r.get(ELAPSED_S) or 0.0)) for r in t.curve
                  if isinstance(r.get("timestamp"), int | float)]  # fmt: skip
        if stamps:
            start = stamps[0][0] - stamps[0][1]
            spans.append((t, start, max(s for s, _ in stamps)))
    if len(spans) < 2:
        return False
    origin = min(s for _, s, _ in spans)
    for row, (t, start, end) in enumerate(spans):
        retried = len(t.attempts) > 1
        ax.barh(row, end - start, left=start - origin, color=colours.get(t.status, "C7"), hatch="//" if retried else "",
                edgecolor="black" if retried else None, linewidth=0.5)  # fmt: skip
    ax.set_yticks(range(len(spans)), [t.trial_id.split("_")[-1] for t, _, _ in spans], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first trial started")
    shown = sorted({t.status for t, _, _ in spans})
    import matplotlib.patches

    handles = [matplotlib.patches.Patch(color=colours.get(s, "C7")) for s in shown]
    ax.legend(handles, shown, fontsize=8, loc="best")
    ax.grid(alpha=0.3, axis="x")
    return True


def flat_value(sweep: SweepRecord, metric: str) -> tuple[float, float] | None:
    """(value, examples) when a metric settles on one value in every trial within the first quarter of its logged
    rows and stays there (train accuracies pinned at 1.0 after a few steps): such curves say nothing drawn, the
    report says it in words. ``examples`` is the latest point at which a trial reached it."""
    settled: set[float] = set()
    reached = 0.0
    for t in sweep.trials:
        pts = curve_points(t, metric)
        if len(pts) < 4:
            continue
        last = round(pts[-1][1], 9)
        start = len(pts)
        while start > 0 and round(pts[start - 1][1], 9) == last:
            start -= 1
        if start > len(pts) // 4:
            return None
        settled.add(last)
        reached = max(reached, pts[start][0])
    return (next(iter(settled)), reached) if len(settled) == 1 else None


def _ordered(values: Any) -> list[Any]:
    return sorted(set(values), key=lambda v: (str(type(v)), v))


def _faceted_curves(plt: Any, sweep: SweepRecord, metric: str, path: Path) -> bool:
    """Curves against examples seen that read at 4 and at 100 trials: one panel per value of a swept parameter
    (the one with the fewest values, other than the colour's), coloured on an ordered scale by the learning rate
    (else the first swept parameter), the winner bold and labelled, stopped trials faded with a mark where they
    stopped, one legend entry per colour, outside the panels."""
    from sweeper.records.store import best_trial

    trials = [(t, curve_points(t, metric)) for t in sweep.trials]
    trials = [(t, pts) for t, pts in trials if pts]
    if not trials:
        return False
    swept = [n for n in sweep.meta.get("swept", []) if n]
    colour = "learning_rate" if "learning_rate" in swept else (swept[0] if swept else None)
    others = [n for n in swept if n != colour]
    facet = min(others, key=lambda n: len({t.params.get(n) for t, _ in trials})) if others else None
    panels = _ordered(t.params.get(facet) for t, _ in trials) if facet else [None]
    shades = _ordered(t.params.get(colour) for t, _ in trials) if colour else [None]
    cmap = plt.get_cmap("viridis", max(len(shades), 2))
    sweep_metric, goal = metric_of(sweep)
    best = best_trial(sweep, sweep_metric, goal)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.0, 3.6), dpi=100, squeeze=False,
                             sharey=True)  # fmt: skip
    try:
        for ax, value in zip(axes[0], panels, strict=True):
            for t, pts in trials:
                if facet and t.params.get(facet) != value:
                    continue
                xs, ys = zip(*pts, strict=True)
                c = cmap(shades.index(t.params.get(colour))) if colour else "C0"
                winner = best is not None and t.trial_id == best.trial_id
                stopped = t.status != "completed"
                ax.plot(xs, ys, color="black" if winner else c, linewidth=2.6 if winner else 1.1,
                        alpha=0.35 if stopped else 1.0, zorder=4 if winner else 2)  # fmt: skip
                end = stop_point(t, metric, pts)
                if end is not None:
                    ax.plot(*end, marker=STATUS_MARKS[t.status], markersize=8, color=c, linestyle="none", zorder=3)
                if winner:
                    ax.annotate("★ winner", xy=(xs[-1], ys[-1]), xytext=(-4, 6), textcoords="offset points",
                                ha="right", fontsize=8, fontweight="bold")  # fmt: skip
            ax.set_title(f"{facet}={value:g}" if isinstance(value, float) else f"{facet}={value}" if facet else "",
                         fontsize=9)  # fmt: skip
            ax.set_xlabel("examples seen")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(metric)
        if colour:
            handles = [plt.Line2D([], [], color=cmap(i), linewidth=2) for i in range(len(shades))]
            labels = [f"{colour}={v:g}" if isinstance(v, float) else f"{colour}={v}" for v in shades]
            handles.append(plt.Line2D([], [], color="black", linewidth=2.6))
            labels.append("winner")
            fig.tight_layout()
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
        else:
            fig.tight_layout()
        fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")  # the legend sits outside the panels
    finally:
        plt.close(fig)
    return True


def _slices(plt: Any, sweep: SweepRecord, path: Path) -> bool:
    """One panel per swept parameter: final metric against its values, coloured by another swept parameter."""
    metric, _ = metric_of(sweep)
    swept = [n for n in sweep.meta.get("swept", []) if n]
    done = [t for t in sweep.trials if t.status == "completed" and isinstance(t.value(metric), int | float)]
    if not swept or len(done) < 2:
        return False
    fig, axes = plt.subplots(1, len(swept), figsize=(3.4 * len(swept) + 1.2, 3.4), dpi=100, squeeze=False)
    try:
        for i, (ax, name) in enumerate(zip(axes[0], swept, strict=True)):
            xs = [t.params.get(name) for t in done]
            ys = [float(t.value(metric)) for t in done]
            numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
            levels = _ordered(xs)
            positions = xs if numeric else [levels.index(x) for x in xs]
            other = next((n for n in swept if n != name), None)
            if other is not None:
                shades = _ordered(t.params.get(other) for t in done)
                cmap = plt.get_cmap("viridis", max(len(shades), 2))
                for k, shade in enumerate(shades):
                    pick = [j for j, t in enumerate(done) if t.params.get(other) == shade]
                    ax.scatter([positions[j] for j in pick], [ys[j] for j in pick], color=cmap(k), s=36,
                               label=f"{other}={shade:g}" if isinstance(shade, float) else f"{other}={shade}",
                               zorder=3)  # fmt: skip
                ax.legend(fontsize=7, loc="best")
            else:
                ax.scatter(positions, ys, s=36, zorder=3)
            if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(levels)), [str(v) for v in levels])
            ax.set_xlabel(name)
            if i == 0:
                ax.set_ylabel(f"final {metric}")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, metadata={"Software": None})
    finally:
        plt.close(fig)
    return True


def curve_points(t: TrialRecord, metric: str) -> list[tuple[float, float]]:
    x = EXAMPLES_SEEN
    return [(float(r[x]), float(r[metric])) for r in t.curve
            if isinstance(r.get(metric), int | float) and isinstance(r.get(x), int | float)]  # fmt: skip


def stop_point(t: TrialRecord, metric: str, points: list[tuple[float, float]]) -> tuple[float, float] | None:
    if t.status not in STATUS_MARKS:
        return None
    at = (t.pruned or {}).get("examples_seen")
    if isinstance(at, int | float):  # the logged point where the pruner stopped it (or the last one before)
        return max((p for p in points if p[0] <= at), default=points[-1], key=lambda p: p[0])
    return points[-1]


def peak_gib(t: TrialRecord) -> float | None:
    reserved = t.value(CUDA_MAX_RESERVED_MB)
    if reserved is not None:
        return reserved / 1024
    rss = t.value(PEAK_RSS_MB)
    return None if rss is None else rss / 1024


def matplotlib_ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _on_gpu(sweep: SweepRecord) -> bool:
    return any(t.value(CUDA_MAX_RESERVED_MB) is not None for t in sweep.trials)


def _label(t: TrialRecord) -> str:
    from sweeper.plan.space import label

    text = f"{t.trial_id.split('_')[-1]} {label(t.params)}"
    return text if t.status == "completed" else f"{text} ({t.status})"
