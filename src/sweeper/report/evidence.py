"""How sure the held-out evidence is: Wilson intervals on preference rates, when two rates are told apart, how
many held-out pairs it would take, and whether a trial's generations degenerate against the base model.

Pure functions of plain numbers (no records, no I/O). A rate is only called better than another when the two
95% Wilson intervals do not overlap: conservative (the pairs are shared, so a paired test would resolve a little
sooner), but it is one rule the report's text and its table marks can both state in a line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "final_gap_sd",
    "DEGENERATE_DISTINCT2_DROP",
    "DEGENERATE_LENGTH_SHARE",
    "DEGENERATE_REPEAT",
    "Rate",
    "degeneration",
    "pairs_needed",
    "wilson",
]

Z95 = 1.959963984540054
# A trial's greedy samples are flagged as degenerate when their repeated word-trigram share is at least this and
# at least twice the base model's, or when their distinct-2 falls this far below the base's.
DEGENERATE_REPEAT = 0.3
DEGENERATE_DISTINCT2_DROP = 0.25
# ... or when its answers shrink below this share of the base's mean length (a policy that learned to stop early).
DEGENERATE_LENGTH_SHARE = 0.5
# Beyond this many held-out pairs the report stops quoting a number ("thousands" of pairs is the message).
MAX_PAIRS = 100_000


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (95% by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n], got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """k of n held-out pairs, with its Wilson interval."""

    k: int
    n: int

    @classmethod
    def of(cls, rate: float | None, n: int | None) -> Rate | None:
        """From a recorded share and its count (evaluation.json stores the share); None when either is missing."""
        if rate is None or not n:
            return None
        return cls(round(float(rate) * int(n)), int(n))

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def above(self, other: Rate) -> bool:
        """True when this rate's interval lies wholly above the other's: the held-out set tells them apart."""
        return self.interval[0] > other.interval[1]

    def text(self) -> str:
        lo, hi = self.interval
        return f"{self.p:.0%} [{lo * 100:.0f}–{hi * 100:.0f}%]"


def pairs_needed(p1: float, p2: float) -> int | None:
    """Held-out pairs (each rate on that many) for 95% Wilson intervals at rates p1 and p2 to stop overlapping.

    None when the rates are equal (no difference to resolve) or when it would take more than MAX_PAIRS.
    """
    if p1 == p2:
        return None
    hi, lo = max(p1, p2), min(p1, p2)

    def apart(n: int) -> bool:
        return wilson(round(hi * n), n)[0] > wilson(round(lo * n), n)[1]

    n = 1
    while not apart(n):
        n *= 2
        if n > MAX_PAIRS:
            return None
    left, right = n // 2, n  # apart(right) holds; shrink to the smallest n that is apart (rounding aside)
    while right - left > 1:
        mid = (left + right) // 2
        left, right = (left, mid) if apart(mid) else (mid, right)
    return right


def degeneration(trial: dict[str, Any] | None, base: dict[str, Any] | None) -> str | None:
    """Why a trial's greedy samples degenerate against the base model's (generation blocks of evaluation.json), or
    None. Reads ``repeated_3gram`` (share of repeated word trigrams) and ``distinct_2``."""
    if not trial or not base or not trial.get("n") or not base.get("n"):
        return None
    reasons = []
    rep, rep0 = trial.get("repeated_3gram"), base.get("repeated_3gram")
    if rep is not None and rep0 is not None and rep >= DEGENERATE_REPEAT and rep >= 2 * rep0:
        reasons.append(f"repeated word trigrams {rep:.2f} against the base's {rep0:.2f}")
    d2, d20 = trial.get("distinct_2"), base.get("distinct_2")
    if d2 is not None and d20 is not None and d20 - d2 >= DEGENERATE_DISTINCT2_DROP:
        reasons.append(f"distinct-2 {d2:.2f} against the base's {d20:.2f}")
    n, n0 = trial.get("n_tokens"), base.get("n_tokens")
    if n is not None and n0 is not None and n0 >= 8 and n < DEGENERATE_LENGTH_SHARE * n0:
        reasons.append(f"answers of {n:.3g} tokens against the base's {n0:.3g}")
    if not reasons:
        return None
    return "degenerate samples: " + ", ".join(reasons)


def final_gap_sd(a: list[float], b: list[float], window: int = 5) -> float | None:
    """The standard error of the difference between two curves' final levels (mean of the last ``window``
    values each), from each curve's own noise (sweeper.prune.gate.curve_noise); None when either is too short."""
    from sweeper.prune.gate import curve_noise

    na, nb = curve_noise(a), curve_noise(b)
    if na is None or nb is None:
        return None
    return math.sqrt(na**2 / min(window, len(a)) + nb**2 / min(window, len(b)))
