"""What a finished sweep says: the markdown report, its plots, comparisons of sweeps and the live dashboard.

Rendering is pure (records in, text out); writing files is separate. Light layer: no torch, no ray.
"""

from __future__ import annotations

from sweeper.report.compare import render_compare, write_compare
from sweeper.report.dashboard import serve
from sweeper.report.markdown import render_report, write_report
from sweeper.report.summary import beta_scaled, metric_of, trials_frame

__all__ = [
    "beta_scaled",
    "metric_of",
    "render_compare",
    "render_report",
    "serve",
    "trials_frame",
    "write_compare",
    "write_report",
]
