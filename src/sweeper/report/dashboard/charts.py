"""The dashboard's Plotly figures, built from records (no Streamlit here, so they are testable without a browser)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from sweeper.plan.space import label
from sweeper.records.metrics import PREDICTED_PEAK_GB
from sweeper.records.store import SweepRecord, TrialRecord
from sweeper.report.plots import curve_points, peak_gib, stop_point
from sweeper.report.summary import batch_of

STOP_SYMBOLS = {"pruned": "x", "oom": "square", "error": "square", "unfinished": "circle-open"}


def curve_figure(trials: Sequence[TrialRecord], metric: str) -> go.Figure:
    """One line per trial against examples seen; a marker where a trial was pruned or failed."""
    fig = go.Figure()
    for i, t in enumerate(trials):
        points = curve_points(t, metric)
        if not points:
            continue
        color = _color(i)
        xs, ys = zip(*points, strict=True)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=_name(t), line={"color": color},
                                 legendgroup=t.trial_id))  # fmt: skip
        stop = stop_point(t, metric, points)
        if stop is not None:
            why = (t.pruned or {}).get("reason") or t.status
            fig.add_trace(go.Scatter(x=[stop[0]], y=[stop[1]], mode="markers", showlegend=False,
                                     legendgroup=t.trial_id, name=f"{t.trial_id} {t.status}", hovertext=[why],
                                     marker={"symbol": STOP_SYMBOLS[t.status], "size": 14, "color": color,
                                             "line": {"width": 2}}))  # fmt: skip
    return _layout(fig, "examples seen", metric)


def memory_figure(sweep: SweepRecord, trials: Sequence[TrialRecord]) -> go.Figure:
    """Peak memory per trial against its per-device batch: measured, predicted, OOM attempts."""
    measured: dict[str, list[Any]] = {"x": [], "y": [], "text": []}
    predicted: dict[str, list[Any]] = {"x": [], "y": [], "text": []}
    oom: dict[str, list[Any]] = {"x": [], "text": []}
    for t in trials:
        batch, _ = batch_of(t)
        for series, value in ((measured, peak_gib(t)), (predicted, t.value(PREDICTED_PEAK_GB))):
            if batch is not None and value is not None:
                series["x"].append(batch)
                series["y"].append(value)
                series["text"].append(t.trial_id)
        for a in t.attempts:
            if a.get("status") == "oom" and a.get("per_device_train_batch_size") is not None:
                oom["x"].append(a["per_device_train_batch_size"])
                oom["text"].append(t.trial_id)
    fig = go.Figure()
    fig.add_trace(go.Scatter(**measured, mode="markers", name="measured peak", marker={"size": 11}))
    if predicted["x"]:
        fig.add_trace(go.Scatter(**predicted, mode="markers", name="predicted",
                                 marker={"size": 11, "symbol": "circle-open"}))  # fmt: skip
    if oom["x"]:
        top = max([*measured["y"], *predicted["y"], 0.0]) * 1.05
        marker = {"size": 13, "symbol": "x", "color": "crimson"}
        fig.add_trace(go.Scatter(x=oom["x"], y=[top] * len(oom["x"]), text=oom["text"], mode="markers",
                                 name="out of memory", marker=marker))  # fmt: skip
    fig.update_xaxes(type="log", dtick=0.30103)  # powers of two
    return _layout(fig, "per-device batch", "peak GiB (CUDA reserved, else RSS)")


def _layout(fig: go.Figure, x: str, y: str) -> go.Figure:
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=380, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"font": {"size": 10}})  # fmt: skip
    return fig


def _name(t: TrialRecord) -> str:
    text = f"{t.trial_id.split('_')[-1]} {label(t.params)}"
    return text if t.status == "completed" else f"{text} ({t.status})"


def _color(i: int) -> str:
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")  # fmt: skip
    return palette[i % len(palette)]
