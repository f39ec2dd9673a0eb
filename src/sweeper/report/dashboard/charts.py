"""The dashboard's Plotly figures of curves, memory and compute, built from records (no Streamlit here, so they
are testable without a browser). The views' data comes from report/figdata.py, as the report's PNGs do."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from sweeper.plan.space import label
from sweeper.records.metrics import PREDICTED_PEAK_GB
from sweeper.records.store import SweepRecord, TrialRecord
from sweeper.report.figdata import (
    compute_segments,
    compute_title,
    curve_layout,
    curve_points,
    on_gpu,
    param_text,
    pause_points,
    peak_gib,
    stop_point,
)
from sweeper.report.summary import Compute, batch_of

STOP_SYMBOLS = {"pruned": "x", "oom": "square", "error": "square", "unfinished": "circle-open"}
WINNER = "black"
FADED = 0.35  # opacity of a trial that stopped early
# one legend row under the plot area: it never covers a curve
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0.0, "font": {"size": 11}}


def shades(n: int) -> list[str]:
    """n colours on the ordered viridis scale (the report's colour map)."""
    return sample_colorscale("Viridis", [i / max(n - 1, 1) for i in range(n)])


def curve_figure(sweep: SweepRecord, trials: Sequence[TrialRecord], metric: str) -> go.Figure:
    """The report's faceted curves: one panel per value of a swept parameter, coloured by the learning rate, the
    winner bold and labelled, stopped trials faded with a mark where they stopped; the legend below the panels."""
    found = [(t, pts) for t in trials if (pts := curve_points(t, metric))]
    layout = curve_layout(sweep, [t for t, _ in found])
    colours = shades(len(layout.shades))
    titles = [param_text(layout.facet, v) for v in layout.panels] if layout.facet else None
    fig = make_subplots(rows=1, cols=len(layout.panels), shared_yaxes=True, subplot_titles=titles,
                        horizontal_spacing=0.04)  # fmt: skip
    for col, panel in enumerate(layout.panels, start=1):
        for t, pts in found:
            if layout.facet and t.params.get(layout.facet) != panel:
                continue
            shade = layout.shades.index(t.params.get(layout.colour)) if layout.colour else 0
            winner = t.trial_id == layout.winner
            line = {"color": WINNER, "width": 4} if winner else {"color": colours[shade], "width": 1.6}
            xs, ys = zip(*pts, strict=True)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=_name(t), showlegend=False, line=line,
                                     legendgroup=f"shade{shade}", opacity=1.0 if t.status == "completed" else FADED,
                                     hovertemplate=f"{_name(t)}<br>%{{x}} examples: %{{y:.4g}}<extra></extra>"),
                          row=1, col=col)  # fmt: skip
            stop = stop_point(t, metric, pts)
            if stop is not None:
                why = (t.pruned or {}).get("reason") or t.status
                fig.add_trace(go.Scatter(x=[stop[0]], y=[stop[1]], mode="markers", showlegend=False,
                                         name=f"{t.trial_id} {t.status}", hovertext=[f"{t.trial_id}: {why}"],
                                         marker={"symbol": STOP_SYMBOLS[t.status], "size": 11,
                                                 "color": colours[shade], "line": {"width": 2}}),
                              row=1, col=col)  # fmt: skip
            paused = pause_points(t, pts)
            if paused:
                fig.add_trace(go.Scatter(x=[p[0] for p in paused], y=[p[1] for p in paused], mode="markers",
                                         showlegend=False, name=f"{t.trial_id} paused",
                                         hovertext=[f"{t.trial_id}: paused"] * len(paused),
                                         marker={"symbol": "diamond-open", "size": 11, "color": colours[shade],
                                                 "line": {"width": 2}}),
                              row=1, col=col)  # fmt: skip
            if winner:
                fig.add_annotation(x=xs[-1], y=ys[-1], text="<b>★ winner</b>", showarrow=False, xanchor="right",
                                   yanchor="bottom", font={"size": 13, "color": WINNER}, row=1, col=col)  # fmt: skip
    for i, value in enumerate(layout.shades if layout.colour else []):
        _legend_entry(fig, param_text(layout.colour or "", value), colours[i], f"shade{i}")
    if layout.winner:
        _legend_entry(fig, "★ winner", WINNER, "winner", width=4)
    fig.update_xaxes(title_text="examples seen")
    fig.update_yaxes(title_text=metric, row=1, col=1)
    return finish(fig, height=400)


def memory_figure(sweep: SweepRecord, trials: Sequence[TrialRecord]) -> go.Figure:
    """Peak memory per trial against its per-device batch: measured, predicted (GPU sweeps only: a GPU prediction
    never shares an axis with CPU RSS), out-of-memory attempts."""
    gpu = on_gpu(sweep)
    measured: dict[str, list[Any]] = {"x": [], "y": [], "text": []}
    predicted: dict[str, list[Any]] = {"x": [], "y": [], "text": []}
    oom: dict[str, list[Any]] = {"x": [], "text": []}
    for t in trials:
        batch, _ = batch_of(t)
        for series, value in ((measured, peak_gib(t)), (predicted, t.value(PREDICTED_PEAK_GB) if gpu else None)):
            if batch is not None and value is not None:
                series["x"].append(batch)
                series["y"].append(value)
                series["text"].append(t.trial_id)
        for a in t.attempts:
            if a.get("status") == "oom" and a.get("per_device_train_batch_size") is not None:
                oom["x"].append(a["per_device_train_batch_size"])
                oom["text"].append(t.trial_id)
    fig = go.Figure()
    fig.add_trace(go.Scatter(**measured, mode="markers", name="measured peak", marker={"size": 11}, showlegend=True))
    if predicted["x"]:
        fig.add_trace(go.Scatter(**predicted, mode="markers", name="predicted",
                                 marker={"size": 11, "symbol": "circle-open"}))  # fmt: skip
    if oom["x"]:
        top = max([*measured["y"], *predicted["y"], 0.0]) * 1.05
        marker = {"size": 13, "symbol": "x", "color": "crimson"}
        fig.add_trace(go.Scatter(x=oom["x"], y=[top] * len(oom["x"]), text=oom["text"], mode="markers",
                                 name="out of memory", marker=marker))  # fmt: skip
    fig.update_xaxes(type="log", dtick=0.30103, title_text="per-device batch")  # powers of two
    fig.update_yaxes(title_text="GPU memory (CUDA reserved), GiB" if gpu else "CPU memory (RSS), GiB",
                     rangemode="tozero")  # fmt: skip
    return finish(fig, height=380)


def compute_figure(c: Compute) -> go.Figure:
    """The report's compute bar: hours spent (trials, the shared work around them), then saved by pruning
    (hatched), each part's hours and price in the legend."""
    fig = go.Figure()
    spent = ("#1f77b4", "#17becf", "#9467bd")
    for i, seg in enumerate(compute_segments(c)):
        saved = seg.kind == "saved"
        fig.add_trace(go.Bar(x=[seg.hours], y=["compute"], orientation="h", name=seg.text(c.unit), showlegend=True,
                             text=[seg.text(c.unit)], textposition="inside", insidetextanchor="middle",
                             marker={"color": "white" if saved else spent[i % len(spent)],
                                     "line": {"color": "#2ca02c" if saved else "white", "width": 2},
                                     "pattern": {"shape": "/" if saved else "", "fgcolor": "#2ca02c"}},
                             hovertemplate=f"{seg.text(c.unit)}<extra></extra>"))  # fmt: skip
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text=compute_title(c))
    fig.update_yaxes(showticklabels=False)
    return finish(fig, height=200, legend={**LEGEND_BELOW, "y": -0.6})


def _legend_entry(fig: go.Figure, text: str, color: str, group: str, width: float = 2.5) -> None:
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=text, legendgroup=group,
                             line={"color": color, "width": width}, hoverinfo="skip"))  # fmt: skip


def finish(fig: go.Figure, height: int, legend: dict[str, Any] | None = None) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend=legend or LEGEND_BELOW,
                      hoverlabel={"font": {"size": 11}})  # fmt: skip
    return fig


def _name(t: TrialRecord) -> str:
    text = f"{t.trial_id.split('_')[-1]} {label(t.params)}"
    return text if t.status == "completed" else f"{text} ({t.status})"
