"""The Streamlit page (run by ``python -m sweeper dashboard``; arguments after Streamlit's ``--``).

Read-only: it loads trials/ with sweeper.records.store and never writes anywhere. The sweep's header and table,
and its open view (views.py), are fragments that rerun every ``--refresh`` seconds, so a running sweep's new results
appear without a reload.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import streamlit as st

from sweeper.records.store import STATUSES, SweepRecord, best_trial
from sweeper.report.dashboard import find_sweeps
from sweeper.report.dashboard.frames import details_frame, summary_frame
from sweeper.report.dashboard.views import live_view, render_views
from sweeper.report.markdown import fmt, status_counts
from sweeper.report.summary import guard_of, metric_of

# a model with random weights: its numbers show that the plumbing works, not alignment
RANDOM_MODELS = ("builtin:tiny-mistral",)


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
    path = sweeps[names.index(chosen)]
    sweep_view(path, statuses, args.refresh, [p for p in sweeps if p != path])


def sweep_view(path: Path, statuses: list[str], refresh_s: float, others: list[Path]) -> None:
    """The sweep's header and trials table, then its views: each a fragment that reloads the records."""
    every = refresh_s if refresh_s > 0 else None
    live_view(path, tuple(statuses), others, every, lambda page, _others: render_sweep(page.sweep, statuses))
    render_views(path, statuses, others, every)


def render_sweep(sweep: SweepRecord, statuses: list[str]) -> None:
    metric, goal = metric_of(sweep)
    meta = sweep.meta
    model = (meta.get("spec") or {}).get("model") or {}
    st.header(f"Sweep {sweep.path.name}")
    running = "running" if not meta.get("finished_at") else f"finished {meta['finished_at']}"
    name = model.get("name_or_path", "?")
    what = " (random model: its numbers show the plumbing, not alignment)" if name in RANDOM_MODELS else ""
    st.caption(f"`{name}`{what} ({model.get('quantization', '?')}) · metric `{metric}` ({goal}) · started "
               f"{meta.get('started_at', '?')} · {running} · {status_counts(sweep)}")  # fmt: skip
    best = best_trial(sweep, metric, goal)
    if best is not None:
        values = ", ".join(f"{k}={fmt(v)}" for k, v in best.params.items())
        guard = guard_of(best)
        warn = f" · ⚠ margin-hacking guard: {guard} (see the Report tab's verdict)" if guard and guard != "ok" else ""
        st.markdown(f"**Best so far:** ★ `{best.trial_id}` ({values or 'no swept parameters'}): `{metric}` = "
                    f"{best.value(metric):.4g}, drawn bold in every view{warn}")  # fmt: skip

    trials = [t for t in sweep.trials if t.status in statuses]
    st.subheader(f"Trials ({len(trials)} of {len(sweep.trials)})")
    st.dataframe(summary_frame(sweep, statuses), hide_index=True, width="stretch", placeholder="-",
                 key=f"table-{sweep.path.name}")  # fmt: skip
    with st.expander("All columns (as in trials.csv)"):
        st.dataframe(details_frame(sweep, statuses), hide_index=True, placeholder="-", key=f"details-{sweep.path.name}")


main()
