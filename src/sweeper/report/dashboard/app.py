"""The Streamlit page (run by ``python -m sweeper dashboard``; arguments after Streamlit's ``--``).

Read-only: it loads trials/ with sweeper.records.store and never writes anywhere. The sweep view is a fragment
that reruns every ``--refresh`` seconds, so a running sweep's new results appear without a reload.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from sweeper.errors import SweeperError
from sweeper.records.store import STATUSES, SweepRecord, best_trial, load_sweep
from sweeper.report.dashboard import find_sweeps
from sweeper.report.dashboard.charts import curve_figure, memory_figure
from sweeper.report.markdown import render_report, status_counts
from sweeper.report.summary import MARGINS, metric_of, trials_frame


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sweeper dashboard app")
    parser.add_argument("--trials", type=Path, default=Path("trials"))
    parser.add_argument("--refresh", type=float, default=5.0)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    st.set_page_config(page_title="sweeper", layout="wide")
    sweeps = find_sweeps(args.trials)
    st.sidebar.title("sweeper")
    st.sidebar.caption(f"`{args.trials}` · read-only · reloads every {args.refresh:g} s")
    if not sweeps:
        st.info(f"No sweep under `{args.trials}` yet (a sweep folder holds sweep.json). "
                "This page lists them once `python -m sweeper launch` starts one.")  # fmt: skip
        return
    names = [p.name for p in sweeps]
    chosen = st.sidebar.radio("Sweep", names, index=0)
    statuses = st.sidebar.multiselect("Status", list(STATUSES), default=list(STATUSES))
    sweep_view(sweeps[names.index(chosen)], statuses, args.refresh)


def sweep_view(path: Path, statuses: list[str], refresh_s: float) -> None:
    @st.fragment(run_every=refresh_s if refresh_s > 0 else None)
    def view() -> None:
        try:
            sweep = load_sweep(path)
        except SweeperError as exc:
            st.error(str(exc))
            return
        render_sweep(sweep, statuses)

    view()


def render_sweep(sweep: SweepRecord, statuses: list[str]) -> None:
    metric, goal = metric_of(sweep)
    meta = sweep.meta
    model = (meta.get("spec") or {}).get("model") or {}
    st.header(f"Sweep {sweep.path.name}")
    running = "running" if not meta.get("finished_at") else f"finished {meta['finished_at']}"
    random_model = " (random weights: its numbers show the plumbing, not alignment)" \
        if model.get("name_or_path") == "builtin:tiny-mistral" else ""  # fmt: skip
    st.caption(f"`{model.get('name_or_path', '?')}`{random_model} ({model.get('quantization', '?')}) · metric "
               f"`{metric}` ({goal}) · started {meta.get('started_at', '?')} · {running} · "
               f"{status_counts(sweep)}")  # fmt: skip
    best = best_trial(sweep, metric, goal)
    if best is not None:
        values = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        st.markdown(f"**Best so far:** `{best.trial_id}` ({values or 'no swept parameters'}): `{metric}` = "
                    f"{best.value(metric):.4g}")  # fmt: skip

    trials = [t for t in sweep.trials if t.status in statuses]
    st.subheader(f"Trials ({len(trials)} of {len(sweep.trials)})")
    frame = trials_frame(sweep)
    if len(frame):
        frame = frame[frame["status"].isin(statuses)].dropna(axis="columns", how="all")
    st.dataframe(frame, hide_index=True, width="stretch", key=f"table-{sweep.path.name}")

    left, right = st.columns(2)
    with left:
        st.subheader("Margins")
        st.plotly_chart(curve_figure(trials, MARGINS), key=f"margins-{sweep.path.name}")
    with right:
        st.subheader("Accuracies")
        st.plotly_chart(curve_figure(trials, "rewards/accuracies"), key=f"acc-{sweep.path.name}")
    if metric not in (MARGINS, "rewards/accuracies"):
        st.subheader(metric)
        st.plotly_chart(curve_figure(trials, metric), key=f"metric-{sweep.path.name}")
    st.subheader("Memory peaks")
    st.plotly_chart(memory_figure(sweep, trials), key=f"memory-{sweep.path.name}")
    with st.expander("Report (as `python -m sweeper report` writes it, without the PNG plots)"):
        st.markdown(render_report(sweep))


main()
