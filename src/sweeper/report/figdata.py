"""What the figures show, as plain data: the report's PNG plots (plots.py, matplotlib) and the dashboard's Plotly
charts (dashboard/) draw the same views from these helpers, so the two never disagree on what a view holds.

Pure functions of the records. Light module: imports neither torch, ray, matplotlib nor plotly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.records.metrics import CUDA_MAX_RESERVED_MB, ELAPSED_S, EXAMPLES_SEEN, PEAK_RSS_MB
from sweeper.records.store import SweepRecord, TrialRecord, best_trial
from sweeper.report.summary import Compute, metric_of

# statuses whose curve ends early, and the matplotlib marker drawn where it ended
STATUS_MARKS = {"pruned": "x", "oom": "s", "error": "s", "unfinished": "s"}


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


def pause_points(t: TrialRecord, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The logged points where the trial was paused (``on_prune: pause`` records them in events.json)."""
    marks = []
    for event in getattr(t, "events", None) or []:
        at = event.get("examples_seen")
        if event.get("event") == "paused" and isinstance(at, int | float) and points:
            marks.append(max((p for p in points if p[0] <= at), default=points[0], key=lambda p: p[0]))
    return marks


def peak_gib(t: TrialRecord) -> float | None:
    reserved = t.value(CUDA_MAX_RESERVED_MB)
    if reserved is not None:
        return reserved / 1024
    rss = t.value(PEAK_RSS_MB)
    return None if rss is None else rss / 1024


def on_gpu(sweep: SweepRecord) -> bool:
    return any(t.value(CUDA_MAX_RESERVED_MB) is not None for t in sweep.trials)


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


def ordered(values: Iterable[Any]) -> list[Any]:
    """The distinct values, sorted within each type (a swept parameter may mix None and numbers)."""
    return sorted(set(values), key=lambda v: (str(type(v)), v))


def param_text(name: str, value: Any) -> str:
    return f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"


def completed(sweep: SweepRecord, metric: str) -> list[TrialRecord]:
    """The completed trials that reported a numeric final ``metric``: what slices and parallel coordinates show."""
    return [t for t in sweep.trials if t.status == "completed" and isinstance(t.value(metric), int | float)]


def swept_names(sweep: SweepRecord) -> list[str]:
    return [n for n in sweep.meta.get("swept", []) if n]


@dataclass(frozen=True)
class CurveLayout:
    """How curves are split: one panel per value of ``facet``, one colour per value of ``colour``."""

    colour: str | None
    facet: str | None
    panels: list[Any]
    shades: list[Any]
    winner: str | None  # trial id of the sweep's best trial


def curve_layout(sweep: SweepRecord, trials: Sequence[TrialRecord]) -> CurveLayout:
    """Panels by the swept parameter with the fewest values (other than the colour's), coloured on an ordered
    scale by the learning rate (else the first swept parameter): curves that read at 4 and at 100 trials."""
    swept = swept_names(sweep)
    colour = "learning_rate" if "learning_rate" in swept else (swept[0] if swept else None)
    others = [n for n in swept if n != colour]
    facet = min(others, key=lambda n: len({t.params.get(n) for t in trials})) if others else None
    panels = ordered(t.params.get(facet) for t in trials) if facet else [None]
    shades = ordered(t.params.get(colour) for t in trials) if colour else [None]
    return CurveLayout(colour, facet, panels, shades, winner_id(sweep))


def winner_id(sweep: SweepRecord) -> str | None:
    """The trial id of the sweep's best completed trial by its metric, which every view draws bold."""
    best = best_trial(sweep, *metric_of(sweep))
    return best.trial_id if best is not None else None


@dataclass(frozen=True)
class Axis:
    """One axis of parallel coordinates: raw values per trial, their plotted position, and the end labels."""

    name: str
    values: list[Any]
    scaled: list[float]  # log10 where the values span 10x or more, level index where they are not numbers
    numeric: bool
    log: bool
    levels: list[Any]  # the distinct values, in order

    def text(self, value: Any) -> str:
        return f"{value:.3g}" if self.numeric else str(value)


def parallel_axes(sweep: SweepRecord) -> tuple[list[TrialRecord], list[Axis]] | None:
    """The completed trials and one axis per swept parameter plus the final metric; None with fewer than 2."""
    metric, _ = metric_of(sweep)
    swept = swept_names(sweep)
    done = completed(sweep, metric)
    if not swept or len(done) < 2:
        return None
    axes = []
    for name in [*swept, metric]:
        values = [t.params.get(name) if name != metric else float(t.value(metric)) for t in done]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        log = numeric and name != metric and min(values) > 0 and max(values) / min(values) >= 10
        levels = ordered(values)
        if log:
            scaled = [math.log10(v) for v in values]
        elif numeric:
            scaled = [float(v) for v in values]
        else:
            scaled = [float(levels.index(v)) for v in values]
        axes.append(Axis(name, values, scaled, numeric, log, levels))
    return done, axes


def timeline_spans(sweep: SweepRecord) -> list[tuple[TrialRecord, float, float]]:
    """(trial, start, end) in seconds since the first trial started, from Ray's timestamps; [] with fewer than 2."""
    spans = []
    for t in sweep.trials:
        stamps = [(float(r["timestamp"]), float(r.get(ELAPSED_S) or 0.0)) for r in t.curve
                  if isinstance(r.get("timestamp"), int | float)]  # fmt: skip
        if stamps:
            spans.append((t, stamps[0][0] - stamps[0][1], max(s for s, _ in stamps)))
    if len(spans) < 2:
        return []
    origin = min(s for _, s, _ in spans)
    return [(t, start - origin, end - origin) for t, start, end in spans]


@dataclass(frozen=True)
class Segment:
    """One part of the compute bar: hours of ``kind`` "spent" (trials, shared work) or "saved" (by pruning)."""

    label: str
    hours: float
    kind: str
    usd: float | None

    def text(self, unit: str) -> str:
        cost = "" if self.usd is None else f", ${self.usd:,.2f}"
        return f"{self.label}: {_hours(self.hours)} {unit}-h{cost}"


def compute_segments(c: Compute) -> list[Segment]:
    """The compute bar, left to right: trials, the work around them, then what pruning saved; [] when nothing ran."""
    if c.spent_h <= 0:
        return []
    parts = [Segment("trials", c.spent_h, "spent", c.usd(c.spent_h))]
    parts += [Segment(name, h, "spent", c.usd(h)) for name, h in c.extra_h.items() if h > 0]
    if c.saved_h > 0:
        parts.append(Segment(f"saved by pruning {c.n_pruned} trial(s)", c.saved_h, "saved", c.usd(c.saved_h)))
    return parts


def compute_title(c: Compute) -> str:
    """The bar's caption: the unit, and the hourly price where the spec sets one."""
    price = f" at ${c.usd_per_hour:g} per GPU-hour" if c.usd_per_hour is not None else ""
    pruned = "" if c.n_pruned else "; no trial was pruned"
    return f"compute in {c.unit}-hours{price}{pruned}"


def _hours(h: float) -> str:
    return f"{h:.3g}"
