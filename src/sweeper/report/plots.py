"""The report's figures (PNG, matplotlib): written to reports/<name>/, referenced by the report by name.

matplotlib is imported inside ``write_plots`` with the Agg backend (no display needed).
Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.records.metrics import PREDICTED_PEAK_GB
from sweeper.records.store import SweepRecord, TrialRecord
from sweeper.report.figdata import (
    STATUS_MARKS,
    completed,
    compute_segments,
    compute_title,
    curve_layout,
    curve_points,
    flat_value,
    on_gpu,
    ordered,
    parallel_axes,
    param_text,
    pause_points,
    peak_gib,
    stop_point,
    swept_names,
    timeline_spans,
    winner_id,
)
from sweeper.report.summary import MARGINS, batch_of, compute, learning_rate_of, metric_of

__all__ = ["PLOTS", "curve_points", "flat_value", "peak_gib", "stop_point", "write_plots"]

# name -> what it shows (the report's caption); the order of the report's "Plots" section
PLOTS = {
    "margins": "`rewards/margins` against examples seen, one panel per value of a swept parameter, coloured by "
    "another (the learning rate where swept); the winner bold; × marks where a trial was pruned (faded), ■ where "
    "it failed, ◇ where it was paused",
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
    "compute": "compute spent by the trials (and the shared work around them) and saved by pruning, in GPU-hours "
    "(CPU-hours without GPUs), with its price at the spec's `resources.gpu_hour_usd`",
}


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
    if _compute_bar(plt, sweep, out_dir / "compute.png"):
        drawn.append("compute")
    return drawn


# Line styles cycled over the trials of a curve panel: two trials that stop at the same point with nearly the same
# values (pruned together) stay both visible, one dashed over the other.
LINE_STYLES = ("-", "--", ":", "-.")


def _curves(ax: Any, sweep: SweepRecord, metric: str) -> bool:
    drawn = False
    for i, t in enumerate(sweep.trials):
        points = curve_points(t, metric)
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        (line,) = ax.plot(xs, ys, marker=".", linewidth=1.2 + 0.6 * (i % 2), label=_label(t),
                          linestyle=LINE_STYLES[i % len(LINE_STYLES)])  # fmt: skip
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
    gpu = on_gpu(sweep)
    if not gpu:
        predicted = []  # a GPU prediction never shares an axis with CPU RSS (the trials table keeps both apart)
    if not measured and not predicted:
        return False
    if measured:
        what = "measured GPU peak (CUDA reserved)" if gpu else "measured CPU peak RSS"
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
    ax.set_ylabel("GPU memory, GiB" if gpu else "CPU memory (RSS), GiB")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.1)  # from zero: a few MB between trials must not look like a spread
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
    import matplotlib

    found = parallel_axes(sweep)
    if found is None:
        return False
    done, axes = found
    metric, goal = metric_of(sweep)
    columns = []
    for x, axis in enumerate(axes):
        lo, hi = min(axis.scaled), max(axis.scaled)
        columns.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in axis.scaled])
        ax.text(x, -0.08, axis.text(axis.levels[0]), ha="center", va="top", fontsize=7)
        ax.text(x, 1.04, axis.text(axis.levels[-1]), ha="center", va="bottom", fontsize=7)
    finals = columns[-1]
    winner = winner_id(sweep)
    cmap = matplotlib.colormaps["viridis"]
    for i, t in enumerate(done):
        ys = [c[i] for c in columns]
        best = t.trial_id == winner
        shade = cmap(finals[i] if goal == "maximize" else 1 - finals[i])
        ax.plot(range(len(axes)), ys, color="black" if best else shade, linewidth=2.6 if best else 1.2,
                alpha=1.0 if best else 0.8, zorder=3 if best else 2)  # fmt: skip
    for x in range(len(axes)):
        ax.axvline(x, color="grey", linewidth=0.8, zorder=1)
    ax.set_xticks(range(len(axes)), [f"final {a.name}" if a.name == metric else a.name for a in axes], fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    ax.set_xlim(-0.2, len(axes) - 0.8)
    return True


def _timeline(ax: Any, sweep: SweepRecord) -> bool:
    """One bar per trial from its first to its last result on the sweep's clock, coloured by status."""
    colours = {"completed": "C2", "pruned": "C1", "oom": "C3", "error": "C3", "unfinished": "C7"}
    spans = timeline_spans(sweep)
    if not spans:
        return False
    for row, (t, start, end) in enumerate(spans):
        retried = len(t.attempts) > 1
        ax.barh(row, end - start, left=start, color=colours.get(t.status, "C7"), hatch="//" if retried else "",
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


def _compute_bar(plt: Any, sweep: SweepRecord, path: Path) -> bool:
    """One stacked horizontal bar: hours spent (trials, then the shared work around them), then saved by pruning
    (hatched); each part's hours and price in the legend below it."""
    c = compute(sweep)
    segments = compute_segments(c)
    if not segments:
        return False
    fig, ax = plt.subplots(figsize=(7, 1.2), dpi=100)
    try:
        left = 0.0
        for i, seg in enumerate(segments):
            saved = seg.kind == "saved"
            ax.barh(0, seg.hours, left=left, height=0.6, color="white" if saved else ("C0", "C9", "C4")[i % 3],
                    edgecolor="C2" if saved else "white", hatch="///" if saved else "", linewidth=1.2,
                    label=seg.text(c.unit))  # fmt: skip
            left += seg.hours
        ax.set_xlim(0, left * 1.02)
        ax.set_ylim(-0.5, 0.5)
        ax.set_yticks([])
        ax.set_xlabel(compute_title(c), fontsize=9)
        ax.grid(alpha=0.3, axis="x")
        fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(segments), 3), fontsize=8,
                   frameon=False)  # fmt: skip
        fig.tight_layout()
        fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")  # the legend sits below the bar
    finally:
        plt.close(fig)
    return True


def _faceted_curves(plt: Any, sweep: SweepRecord, metric: str, path: Path) -> bool:
    """Curves against examples seen that read at 4 and at 100 trials: one panel per value of a swept parameter
    (the one with the fewest values, other than the colour's), coloured on an ordered scale by the learning rate
    (else the first swept parameter), the winner bold and labelled, stopped trials faded with a mark where they
    stopped, one legend entry per colour, outside the panels."""
    trials = [(t, curve_points(t, metric)) for t in sweep.trials]
    trials = [(t, pts) for t, pts in trials if pts]
    if not trials:
        return False
    layout = curve_layout(sweep, [t for t, _ in trials])
    colour, facet, panels, shades = layout.colour, layout.facet, layout.panels, layout.shades
    cmap = plt.get_cmap("viridis", max(len(shades), 2))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.0, 3.6), dpi=100, squeeze=False,
                             sharey=True)  # fmt: skip
    try:
        for ax, value in zip(axes[0], panels, strict=True):
            n_stopped = 0
            for t, pts in trials:
                if facet and t.params.get(facet) != value:
                    continue
                xs, ys = zip(*pts, strict=True)
                c = cmap(shades.index(t.params.get(colour))) if colour else "C0"
                winner = t.trial_id == layout.winner
                stopped = t.status != "completed"
                # stopped trials cycle line styles: two stopped at the same point with nearly the same values both show
                style = LINE_STYLES[n_stopped % len(LINE_STYLES)] if stopped else "-"
                n_stopped += stopped
                ax.plot(xs, ys, color="black" if winner else c, linewidth=2.6 if winner else 1.1 + 0.5 * stopped,
                        alpha=0.5 if stopped else 1.0, zorder=4 if winner else 2, linestyle=style)  # fmt: skip
                end = stop_point(t, metric, pts)
                if end is not None:
                    ax.plot(*end, marker=STATUS_MARKS[t.status], markersize=8, color=c, linestyle="none", zorder=3)
                for mark in pause_points(t, pts):
                    ax.plot(*mark, marker="D", markersize=6, markerfacecolor="none", color=c, linestyle="none",
                            zorder=3)  # fmt: skip
                if winner:
                    ax.annotate("★ winner", xy=(xs[-1], ys[-1]), xytext=(-4, 6), textcoords="offset points",
                                ha="right", fontsize=8, fontweight="bold")  # fmt: skip
            ax.set_title(param_text(facet, value) if facet else "", fontsize=9)
            ax.set_xlabel("examples seen")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(metric)
        if colour:
            handles = [plt.Line2D([], [], color=cmap(i), linewidth=2) for i in range(len(shades))]
            labels = [param_text(colour, v) for v in shades]
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


# A numeric swept parameter with at most this many values gets one x tick per value in the slices panel.
MAX_TICKED_VALUES = 8


def _slices(plt: Any, sweep: SweepRecord, path: Path) -> bool:
    """One panel per swept parameter: final metric against its values, coloured by another swept parameter."""
    metric, _ = metric_of(sweep)
    swept = swept_names(sweep)
    done = completed(sweep, metric)
    if not swept or len(done) < 2:
        return False
    fig, axes = plt.subplots(1, len(swept), figsize=(3.4 * len(swept) + 1.2, 3.4), dpi=100, squeeze=False)
    try:
        for i, (ax, name) in enumerate(zip(axes[0], swept, strict=True)):
            xs = [t.params.get(name) for t in done]
            ys = [float(t.value(metric)) for t in done]
            numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
            levels = ordered(xs)
            positions = xs if numeric else [levels.index(x) for x in xs]
            other = next((n for n in swept if n != name), None)
            if other is not None:
                shades = ordered(t.params.get(other) for t in done)
                cmap = plt.get_cmap("viridis", max(len(shades), 2))
                for k, shade in enumerate(shades):
                    pick = [j for j, t in enumerate(done) if t.params.get(other) == shade]
                    ax.scatter([positions[j] for j in pick], [ys[j] for j in pick], color=cmap(k), s=36,
                               label=param_text(other, shade), zorder=3)  # fmt: skip
                ax.legend(fontsize=7, loc="best")
            else:
                ax.scatter(positions, ys, s=36, zorder=3)
            if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(levels)), [str(v) for v in levels])
            elif len(levels) <= MAX_TICKED_VALUES:  # the swept values themselves, never fractions between them
                ax.set_xticks(levels, [f"{v:g}" for v in levels])
                ax.xaxis.set_minor_locator(matplotlib_ticker().NullLocator())
            ax.set_xlabel(name)
            if i == 0:
                ax.set_ylabel(f"final {metric}")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, metadata={"Software": None})
    finally:
        plt.close(fig)
    return True


def matplotlib_ticker() -> Any:
    import matplotlib.ticker

    return matplotlib.ticker


def _label(t: TrialRecord) -> str:
    from sweeper.plan.space import label

    text = f"{t.trial_id.split('_')[-1]} {label(t.params)}"
    return text if t.status == "completed" else f"{text} ({t.status})"
