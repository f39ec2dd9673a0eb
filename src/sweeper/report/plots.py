"""The report's figures (PNG, matplotlib): written to reports/<name>/, referenced by the report by name.

matplotlib is imported inside ``write_plots`` with the Agg backend (no display needed).
Light module: imports neither torch nor ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.records.metrics import CUDA_MAX_RESERVED_MB, EXAMPLES_SEEN, PEAK_RSS_MB, PREDICTED_PEAK_GB
from sweeper.records.store import SweepRecord, TrialRecord
from sweeper.report.summary import MARGINS, batch_of, learning_rate_of, metric_of

# name -> what it shows (the report's caption); the order of the report's "Plots" section
PLOTS = {
    "margins": "`rewards/margins` against examples seen; × marks where a trial was pruned, ■ where it failed",
    "accuracies": "`rewards/accuracies` against examples seen",
    "eval_margins": "held-out `eval_rewards/margins` (TRL's evaluation every `eval_steps`) against examples seen",
    "memory": "peak memory against per-device batch: measured (●), predicted (○), out of memory (×)",
    "lr_batch": "final value of the sweep's metric by learning rate and effective batch",
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
    }
    drawn = []
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
    if not measured and not predicted:
        return False
    if measured:
        ax.scatter(*zip(*measured, strict=True), label="measured peak", zorder=3)
    if predicted:
        ax.scatter(*zip(*predicted, strict=True), facecolors="none", edgecolors="C1", label="predicted", zorder=3)
    if oom:
        top = max(y for _, y in [*measured, *predicted])
        ax.scatter(oom, [top * 1.05] * len(oom), marker="x", color="C3", s=60, label="out of memory", zorder=3)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib_ticker().ScalarFormatter())
    ax.set_xlabel("per-device batch")
    ax.set_ylabel("GiB (" + ("CUDA reserved" if _on_gpu(sweep) else "RSS") + ")")
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
            levels = sorted(set(xs), key=lambda v: (str(type(v)), v))
            positions = xs if numeric else [levels.index(x) for x in xs]
            other = next((n for n in swept if n != name), None)
            if other is not None:
                shades = sorted({t.params.get(other) for t in done}, key=lambda v: (str(type(v)), v))
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
