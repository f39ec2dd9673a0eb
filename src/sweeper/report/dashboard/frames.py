"""The dashboard's trials tables as pandas frames (no Streamlit here): the report's summary columns, at most ~10,
so the table fits a 1280 px window, and every column of trials.csv for the expander below it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sweeper.records.store import SweepRecord
from sweeper.report.figdata import winner_id
from sweeper.report.markdown import SHORT
from sweeper.report.summary import accounting, metric_of, trials_frame

if TYPE_CHECKING:
    import pandas as pd


def summary_frame(sweep: SweepRecord, statuses: Sequence[str]) -> pd.DataFrame:
    """The report's summary table as values (sortable): trial (★ the winner), swept values, status, the metric's
    final value, held-out preference rate and guard where recorded, GPU- or CPU-hours, peak memory (CUDA
    reserved on GPUs, else RSS: the full table has both, and CUDA allocated)."""
    import pandas as pd

    full = trials_frame(sweep)
    if not len(full):
        return pd.DataFrame(columns=["trial", "status"])
    full = full[full["status"].isin(statuses)]
    metric, _ = metric_of(sweep)
    unit = accounting(sweep).unit
    winner = winner_id(sweep)
    out = pd.DataFrame({"trial": [f"{t} ★" if t == winner else t for t in full["trial_id"]]}, index=full.index)
    for name in sweep.meta.get("swept", []):
        out[name] = full[name]
    out["status"] = full["status"]
    out[f"{SHORT.get(metric, metric)} final"] = full[metric].map(_round) if metric in full else None
    if full["heldout_pref_rate"].notna().any():
        out["held-out pref rate"] = full["heldout_pref_rate"].map(lambda v: None if pd.isna(v) else f"{v:.0%}")
    if full["guard"].notna().any():
        out["guard"] = full["guard"].map(lambda g: None if pd.isna(g) else "ok" if g == "ok" else "flagged")
    out[f"{unit}-h"] = full[f"{unit.lower()}_hours"].map(_round)
    if full["cuda_max_reserved_mb"].notna().any():  # GPU memory and CPU RSS never in one column
        out["GPU peak GiB"] = (full["cuda_max_reserved_mb"] / 1024).round(1)
    else:
        out["RSS peak MiB"] = full["peak_rss_mb"].round(0)
    return out


def details_frame(sweep: SweepRecord, statuses: Sequence[str]) -> pd.DataFrame:
    """Every column of trials.csv that holds a value for the trials shown."""
    full = trials_frame(sweep)
    if len(full):
        full = full[full["status"].isin(statuses)].dropna(axis="columns", how="all")
    return full


def _round(value: Any) -> Any:
    """Four significant digits, as the report prints them (a number stays a number, so the column sorts)."""
    if not isinstance(value, float) or value != value or value == 0:
        return value
    return float(f"{value:.4g}")
