"""The dashboard's Plotly figures of the sweep as a whole: importances, slices, parallel coordinates, timeline and
sweeps compared. Same data as the report's plots (report/figdata.py, report/sensitivity.py); no Streamlit here."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sweeper.records.store import SweepRecord, best_trial
from sweeper.report.dashboard.charts import LEGEND_BELOW, WINNER, finish, shades
from sweeper.report.figdata import (
    completed,
    curve_points,
    ordered,
    parallel_axes,
    param_text,
    swept_names,
    timeline_spans,
    winner_id,
)
from sweeper.report.sensitivity import EVALUATORS, Sensitivity
from sweeper.report.summary import metric_of

MAX_CATEGORIES = 6  # a slice with at most this many values puts them evenly on a labelled axis
STATUS_COLOURS = {"completed": "#2ca02c", "pruned": "#ff7f0e", "oom": "#d62728", "error": "#d62728",
                  "unfinished": "#7f7f7f"}  # fmt: skip


def importance_figure(s: Sensitivity) -> go.Figure:
    """One bar per parameter and evaluator: the share of the final metric's variation it explains."""
    fig = go.Figure()
    params = list(reversed(s.ranked))  # the most important on top
    for name, colour in zip(EVALUATORS, ("#1f77b4", "#ff7f0e"), strict=True):
        if name in s.importances:
            shares = [s.importances[name].get(p, 0.0) for p in params]
            fig.add_trace(go.Bar(x=shares, y=params, orientation="h", name=name, marker={"color": colour},
                                 text=[f"{v:.0%}" for v in shares], textposition="outside",
                                 hovertemplate="%{y}: %{x:.0%}<extra>" + name + "</extra>"))  # fmt: skip
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="share of the variation explained", tickformat=".0%", range=[0, 1.1])
    return finish(fig, height=140 + 70 * len(params), legend={**LEGEND_BELOW, "y": -0.3})


def slices_figure(sweep: SweepRecord) -> go.Figure:
    """One panel per swept parameter: the final metric of each completed trial against its value, coloured by
    another swept parameter (a legend under each panel), the winner as a star."""
    metric, _ = metric_of(sweep)
    swept = swept_names(sweep)
    done = completed(sweep, metric)
    winner = winner_id(sweep)
    fig = make_subplots(rows=1, cols=max(len(swept), 1), shared_yaxes=True, horizontal_spacing=0.06)
    for col, name in enumerate(swept, start=1):
        few = len({t.params.get(name) for t in done}) <= MAX_CATEGORIES
        x_of = _text if few else (lambda v: v)
        other = next((n for n in swept if n != name), None)
        levels = ordered(t.params.get(other) for t in done) if other else [None]
        colours = shades(len(levels))
        legend = f"legend{col}" if col > 1 else "legend"
        for k, level in enumerate(levels):
            pick = [t for t in done if other is None or t.params.get(other) == level]
            fig.add_trace(go.Scatter(x=[x_of(t.params.get(name)) for t in pick], y=[t.value(metric) for t in pick],
                                     mode="markers", name=param_text(other, level) if other else "trials",
                                     legend=legend, marker={"size": 10, "color": colours[k]},
                                     text=[t.trial_id for t in pick],
                                     hovertemplate="%{text}: %{y:.4g}<extra></extra>"),
                          row=1, col=col)  # fmt: skip
        best = [t for t in done if t.trial_id == winner]
        if best:
            fig.add_trace(go.Scatter(x=[x_of(best[0].params.get(name))], y=[best[0].value(metric)], mode="markers",
                                     name="★ winner", legend=legend, showlegend=True,
                                     marker={"symbol": "star", "size": 17, "color": WINNER}),
                          row=1, col=col)  # fmt: skip
        levels = ordered(t.params.get(name) for t in done)
        if len(levels) <= MAX_CATEGORIES:  # a grid's few values, evenly spaced and labelled as the spec writes them
            fig.update_xaxes(row=1, col=col, title_text=name, type="category", categoryorder="array",
                             categoryarray=[_text(v) for v in levels])  # fmt: skip
        else:
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in levels)
            log = numeric and min(levels) > 0 and max(levels) / min(levels) >= 10
            fig.update_xaxes(row=1, col=col, title_text=name, type="log" if log else "-")
    fig.update_yaxes(title_text=f"final {metric}", row=1, col=1)
    fig = finish(fig, height=420)
    for col in range(1, len(swept) + 1):  # each panel's legend under it
        domain = fig.layout[f"xaxis{col if col > 1 else ''}"].domain
        key = f"legend{col}" if col > 1 else "legend"
        fig.update_layout({key: {"x": domain[0], "y": -0.25, "xanchor": "left", "yanchor": "top",
                                 "orientation": "v", "font": {"size": 11}}})  # fmt: skip
    fig.update_layout(margin={"b": 40})
    return fig


def parallel_figure(sweep: SweepRecord) -> go.Figure:
    """The report's parallel coordinates: each completed trial's swept values and final metric on axes scaled to
    their range (log where a parameter spans 10x), coloured by the metric, the winner bold and labelled."""
    found = parallel_axes(sweep)
    fig = go.Figure()
    if found is None:
        return fig
    done, axes = found
    metric, goal = metric_of(sweep)
    winner = winner_id(sweep)
    columns = []
    for x, axis in enumerate(axes):
        lo, hi = min(axis.scaled), max(axis.scaled)
        columns.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in axis.scaled])
        for y, value in ((-0.07, axis.levels[0]), (1.07, axis.levels[-1])):
            fig.add_annotation(x=x, y=y, text=axis.text(value), showarrow=False, font={"size": 11})
    order = sorted(range(len(done)), key=lambda i: done[i].trial_id == winner)  # the winner drawn last, on top
    colours = shades(101)
    for i in order:
        t = done[i]
        best = t.trial_id == winner
        share = columns[-1][i] if goal == "maximize" else 1 - columns[-1][i]
        values = ", ".join(f"{a.name}={a.text(a.values[i])}" for a in axes)
        fig.add_trace(go.Scatter(x=list(range(len(axes))), y=[c[i] for c in columns], mode="lines",
                                 name=t.trial_id, showlegend=False, opacity=1.0 if best else 0.75,
                                 line={"color": WINNER if best else colours[round(share * 100)],
                                       "width": 5 if best else 1.8},
                                 hovertemplate=f"{t.trial_id}: {values}<extra></extra>"))  # fmt: skip
        if best:
            fig.add_annotation(x=len(axes) - 1, y=columns[-1][i], text=f"<b>★ winner {t.trial_id}</b>",
                               showarrow=False, xanchor="left", xshift=8)  # fmt: skip
    names = [f"final {a.name}" if a.name == metric else a.name for a in axes]
    fig.update_xaxes(tickvals=list(range(len(axes))), ticktext=names, range=[-0.2, len(axes) - 0.4],
                     showgrid=True, gridcolor="#999")  # fmt: skip
    fig.update_yaxes(visible=False, range=[-0.14, 1.14])
    return finish(fig, height=420)


def timeline_figure(sweep: SweepRecord) -> go.Figure:
    """One bar per trial from its first to its last result on the sweep's clock, coloured by how it ended,
    hatched where it was retried after running out of memory."""
    fig = go.Figure()
    spans = timeline_spans(sweep)
    winner = winner_id(sweep)
    for status in ordered(t.status for t, _, _ in spans):
        rows = [(t, a, b) for t, a, b in spans if t.status == status]
        marker = {"color": STATUS_COLOURS.get(status, "#7f7f7f"),
                  "line": {"color": WINNER, "width": [3 if t.trial_id == winner else 0 for t, _, _ in rows]},
                  "pattern": {"shape": ["/" if len(t.attempts) > 1 else "" for t, _, _ in rows]}}  # fmt: skip
        names = [f"{t.trial_id} ★ winner" if t.trial_id == winner else t.trial_id for t, _, _ in rows]
        fig.add_trace(go.Bar(y=[t.trial_id.split("_")[-1] for t, _, _ in rows], x=[b - a for _, a, b in rows],
                             base=[a for _, a, _ in rows], orientation="h", name=status, showlegend=True,
                             marker=marker, customdata=names,
                             hovertemplate="%{customdata}: from %{base:.0f} s, %{x:.0f} s<extra></extra>"))  # fmt: skip
    order = [t.trial_id.split("_")[-1] for t, _, _ in spans]
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order, autorange="reversed",
                     tickmode="array", tickvals=order)  # every trial labelled  # fmt: skip
    fig.update_xaxes(title_text="seconds since the first trial started")
    height = 140 + 18 * len(spans)
    return finish(fig, height=height, legend={**LEGEND_BELOW, "y": -80 / (height - 40)})  # 80 px under the bars


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def compare_figure(sweeps: Sequence[SweepRecord]) -> go.Figure:
    """Each sweep's winner on its own metric against examples seen: the sweeps side by side."""
    fig = go.Figure()
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
    for i, sweep in enumerate(sweeps):
        metric, goal = metric_of(sweep)
        best = best_trial(sweep, metric, goal)
        points = curve_points(best, metric) if best is not None else []
        if best is None or not points:
            continue
        xs, ys = zip(*points, strict=True)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{sweep.path.name}: {best.trial_id} ({metric})",
                                 line={"color": palette[i % len(palette)], "width": 3 if i == 0 else 2,
                                       "dash": ("solid", "dash", "dot", "dashdot")[i % 4]}))  # fmt: skip
    fig.update_xaxes(title_text="examples seen")
    fig.update_yaxes(title_text="the winner's metric")
    return finish(fig, height=380)
