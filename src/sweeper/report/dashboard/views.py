"""The dashboard's views, one tab each, drawn with Streamlit from the figures in charts.py and analysis.py.

Each view says in words what it cannot draw (a flat metric, too few trials for importances, one sweep only).
The slow parts (importances, the report) are cached per state of the sweep's records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from sweeper.errors import SweeperError
from sweeper.records.store import SweepRecord, TrialRecord, load_sweep
from sweeper.report.compare import render_compare
from sweeper.report.dashboard.analysis import (
    compare_figure,
    importance_figure,
    parallel_figure,
    slices_figure,
    timeline_figure,
)
from sweeper.report.dashboard.charts import compute_figure, curve_figure, memory_figure
from sweeper.report.figdata import curve_points, parallel_axes, timeline_spans
from sweeper.report.markdown import compute_lines, flat_line, render_report
from sweeper.report.sensitivity import Sensitivity, sensitivity
from sweeper.report.summary import EVAL_METRICS, MARGINS, compute, metric_of

VIEW_KEY = "view"  # session state: the label of the open tab
REPORT_ABOVE = ("Trials\n", "Details\n")  # the report's sections the page already shows above its views
VIEWS = ("Curves", "Sensitivity", "Parallel coordinates", "Timeline", "Memory & compute", "Compare sweeps", "Report")


def fingerprint(sweep: SweepRecord) -> tuple[Any, ...]:
    """What the cached views depend on: each trial's status and logged rows, and whether the sweep finished."""
    return (str(sweep.path), sweep.meta.get("finished_at"),
            tuple((t.trial_id, t.status, len(t.curve), bool(t.evaluation)) for t in sweep.trials))  # fmt: skip


# the figures a view draws, by name: (sweep, the trials the status filter keeps, a metric) -> figure
FIGURES: dict[str, Callable[[SweepRecord, list[TrialRecord], str], Any]] = {
    "curves": curve_figure,
    "memory": lambda sweep, trials, _: memory_figure(sweep, trials),
    "compute": lambda sweep, _, __: compute_figure(compute(sweep)),
    "slices": lambda sweep, _, __: slices_figure(sweep),
    "parallel": lambda sweep, _, __: parallel_figure(sweep),
    "timeline": lambda sweep, _, __: timeline_figure(sweep),
}


@st.cache_data(max_entries=128, show_spinner=False)
def figure(name: str, key: tuple[Any, ...], statuses: tuple[str, ...], metric: str, _sweep: SweepRecord) -> Any:
    """FIGURES[name], built once per state of the records (the page reruns every few seconds)."""
    return FIGURES[name](_sweep, [t for t in _sweep.trials if t.status in statuses], metric)


@st.cache_data(max_entries=32, show_spinner="Ranking the parameters (Optuna's PED-ANOVA and fANOVA)...")
def cached_sensitivity(key: tuple[Any, ...], _sweep: SweepRecord) -> Sensitivity | None:
    return sensitivity(_sweep, *metric_of(_sweep))


@st.cache_data(max_entries=32, show_spinner="Writing the report...")
def cached_report(key: tuple[Any, ...], _sweep: SweepRecord) -> str:
    """The report without its tables of trials: the page shows them above the views, sortable, and the report's
    markdown tables would run wider than the window."""
    sections = render_report(_sweep).split("\n## ")
    return "\n## ".join(s for s in sections if not s.startswith(REPORT_ABOVE))


@dataclass(frozen=True)
class Page:
    """One sweep's views: the records, the statuses the sidebar keeps, the key of their cached figures."""

    sweep: SweepRecord
    statuses: tuple[str, ...]

    @property
    def trials(self) -> list[TrialRecord]:
        return [t for t in self.sweep.trials if t.status in self.statuses]

    @property
    def key(self) -> tuple[Any, ...]:
        return fingerprint(self.sweep)

    def chart(self, name: str, drawn: bool = True, why: str = "", metric: str = "") -> None:
        """FIGURES[name] (cached), or why it cannot be drawn yet."""
        if not drawn:
            st.info(why)
            return
        fig = figure(name, self.key, self.statuses, metric, self.sweep)
        st.plotly_chart(fig, key=f"{name}-{metric}-{self.sweep.path.name}")


def render_views(path: Path, statuses: Sequence[str], others: Sequence[Path], refresh_s: float | None) -> None:
    """The tabs under the trials table. Only the open tab's view runs (on_change="rerun": importances or the report
    take seconds on a large sweep), as a fragment of its own that reloads the records every ``refresh_s``: the tabs
    stay out of the reloads, so a click on a tab is never undone by one. The open view is kept across sweeps."""
    draws: list[Callable[[Page, Sequence[Path]], None]] = [
        lambda page, _: curves_view(page),
        lambda page, _: sensitivity_view(page),
        lambda page, _: parallel_view(page),
        lambda page, _: timeline_view(page),
        lambda page, _: memory_view(page),
        lambda page, others: compare_view(page.sweep, others),
        lambda page, _: st.markdown(cached_report(page.key, page.sweep)),
    ]
    for tab, draw in zip(st.tabs(list(VIEWS), key=VIEW_KEY, on_change="rerun"), draws, strict=True):
        with tab:
            if tab.open is not False:
                live_view(path, tuple(statuses), others, refresh_s, draw)


def live_view(path: Path, statuses: tuple[str, ...], others: Sequence[Path], refresh_s: float | None,
              draw: Callable[[Page, Sequence[Path]], None]) -> None:  # fmt: skip
    @st.fragment(run_every=refresh_s)
    def view() -> None:
        try:
            sweep = load_sweep(path)
        except SweeperError as exc:
            st.error(str(exc))
            return
        draw(Page(sweep, statuses), others)

    view()


def curves_view(page: Page) -> None:
    metric, _ = metric_of(page.sweep)
    trials = page.trials
    logged = {k for t in trials for row in t.curve for k in row}
    shown = dict.fromkeys([MARGINS, "rewards/accuracies", *(m for m in EVAL_METRICS if m in logged), metric])
    st.caption("Against examples seen, one panel per value of a swept parameter, coloured by the learning rate; "
               "the winner bold, trials that stopped early faded with a mark where they stopped (× pruned, "
               "■ failed, ○ unfinished; ◇ where a trial was paused).")  # fmt: skip
    for name in shown:
        if not any(curve_points(t, name) for t in trials):
            continue
        st.subheader(name)
        flat = flat_line(page.sweep, name)
        if flat is not None:
            st.info(flat)
        else:
            page.chart("curves", metric=name)


def sensitivity_view(page: Page) -> None:
    s = cached_sensitivity(page.key, page.sweep)
    metric, _ = metric_of(page.sweep)
    st.subheader("Parameter importances")
    if s is None:
        st.info("Nothing is swept: no parameter to rank.")
        return
    if s.reason:
        st.info(f"Parameter importances: not computed, {s.reason}.")
    else:
        st.plotly_chart(importance_figure(s), key=f"importances-{page.sweep.path.name}")
        st.markdown(f"Share of the variation in final `{metric}` over {s.n_trials} completed trials that each "
                    "parameter explains (Optuna's evaluators, each summing to 100%): the sweep is most sensitive "
                    f"to `{s.ranked[0]}`.")  # fmt: skip
        for name, why in s.skipped.items():
            st.caption(f"{name}: not computed ({why}).")
    st.subheader("Slices")
    page.chart("slices", parallel_axes(page.sweep) is not None, "Slices need a swept parameter and 2 completed trials.")


def parallel_view(page: Page) -> None:
    metric, goal = metric_of(page.sweep)
    better = "higher" if goal == "maximize" else "lower"
    st.caption(f"Each completed trial's swept values and final `{metric}`, each axis from its smallest to its "
               f"largest value (log where a parameter spans 10x or more); yellow is {better} `{metric}`, the "
               "winner black and bold.")  # fmt: skip
    page.chart("parallel", parallel_axes(page.sweep) is not None,
               "Parallel coordinates need a swept parameter and 2 completed trials.")  # fmt: skip


def timeline_view(page: Page) -> None:
    st.caption("One bar per trial from its first to its last result on the sweep's clock, coloured by how it ended "
               "(hatched: retried after running out of memory, outlined: the winner): how well the hardware was "
               "used.")  # fmt: skip
    page.chart("timeline", bool(timeline_spans(page.sweep)), "The timeline needs 2 trials with Ray timestamps.")


def memory_view(page: Page) -> None:
    st.subheader("Memory peaks")
    page.chart("memory")
    st.subheader("Compute")
    page.chart("compute", compute(page.sweep).spent_h > 0, "No trial has reported its wall time yet.")
    st.markdown("\n".join(compute_lines(page.sweep)))


def compare_view(sweep: SweepRecord, others: Sequence[Path]) -> None:
    if not others:
        st.info("Only one sweep under this folder: nothing to compare it with.")
        return
    names = [p.name for p in others]
    picked = st.multiselect("Compare with", names, default=names[:2], key=f"compare-{sweep.path.name}")
    sweeps = [sweep]
    for path in (others[names.index(n)] for n in picked):
        try:
            sweeps.append(load_sweep(path))
        except SweeperError as exc:
            st.error(str(exc))
    if len(sweeps) < 2:
        st.info("Pick a sweep to compare with.")
        return
    st.plotly_chart(compare_figure(sweeps), key=f"compare-{sweep.path.name}-chart")
    text = render_compare(sweeps)
    st.markdown(text.split("\n", 1)[1])  # without its title: the tab says what it is
