"""Where a launch's wall time goes: one entry per phase (data, Ray start, shared references, trials, held-out
evaluation, report), printed at the end and kept in sweep.json. Light module."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Phases:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - began)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 1)

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.started, 1)

    def text(self) -> str:
        """``in 448 s (data 12 s, Ray start 7.4 s, trials 301 s, ...)``: every phase, the rest unnamed."""
        parts = [f"{name} {seconds:g} s" for name, seconds in self.seconds.items() if seconds >= 0.1]
        return f"in {self.total:g} s ({', '.join(parts)})" if parts else f"in {self.total:g} s"
