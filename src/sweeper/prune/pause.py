"""Pause, don't kill: which paused trials run again, and which are pruned for good (``on_prune: pause``).

A trial below the bar is paused with its checkpoint (sweeper.train.resume) and its Optuna trial stays RUNNING,
so the pruner can be asked again later. It is resumed when the evidence changes:

- the bar fell below it: the sweep's pruner, asked again on the trial's own reported values, no longer prunes it
  (more trials finished and moved the median, the percentile, the rung);
- the leader degraded or was flagged: a trial that was beaten when it was paused is no longer beaten by the
  best latest value of the other trials the margin-hacking guard has not flagged (a flagged leader is no leader);
  a trial paused while it led (an absolute bar, such as Optuna's threshold pruner) waits for the bar or the end;
- at the end (nothing pending or running, no new trial to come): its upper bound, the best of its best value so
  far and its curve extrapolated linearly to its planned examples, plus ``NOISE_SIGMAS`` times the curve's noise,
  could still beat the winner (the best completed, unflagged trial). Resumed then, it runs to its end. Paused
  trials whose bound cannot beat the winner are pruned for good.

A trial paused ``MAX_PAUSES`` times is pruned at its next verdict rather than paused again (each resume reloads
its model).

Breadth first (``breadth_first: true``): rungs at the pruner's warm-up point and every RUNG_FACTOR times further.
A trial that reaches a rung while trials are still to start, or while another trial (running, or waiting at an
earlier rung) has yet to reach it, waits there, paused, whatever its value. When no trial is left to reach the rung,
each waiting trial is judged against all the others there: above the bar it resumes, below it stays paused as any
trial below the bar. A trial's curve no longer runs on unchallenged just because it came first. Each trial waits
at most once per rung, and a wait is not counted in ``MAX_PAUSES``.

Plain Python: the Ray scheduler (sweeper.tune.raytune) asks it, tests feed it by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sweeper.plan.pruning import GateSettings
from sweeper.prune.gate import PruningGate, curve_noise, warmup_steps
from sweeper.records.metrics import EXAMPLES_SEEN, STEP

# Standard deviations of a curve's own noise added to its optimistic final value (the end-of-sweep bound).
NOISE_SIGMAS = 2.0
# Points of a curve's tail that its linear extrapolation is fitted to.
TAIL = 5
# Pauses of one trial before a verdict below the bar prunes it for good.
MAX_PAUSES = 3
# Breadth first: each rung this many times the examples of the one before (as ASHA's reduction factor).
RUNG_FACTOR = 3


@dataclass
class Paused:
    """A trial waiting with its checkpoint: where it was paused and what it had shown."""

    result: dict[str, Any]  # the result it was paused after (pruned.json is written from it if it never resumes)
    value: float | None  # the pruning metric there
    reason: str
    planned: int  # examples it sees when it runs to its end
    beaten_by: float | None = None  # the leader's value when it was paused (None: it led, or nobody had a value)
    waiting: bool = False  # breadth first: waiting at a rung for the trials yet to reach it
    rung: int = 0  # waiting: the rung it waits at
    below: str = ""  # waiting: the reason it stays paused if it is below the bar once no trial is left to come

    @property
    def examples_seen(self) -> int:
        return int(self.result.get(EXAMPLES_SEEN) or 0)


@dataclass
class PauseBook:
    """The sweep's paused trials and the evidence that decides on them (every trial's curve, guard flags, ends)."""

    maximize: bool
    paused: dict[str, Paused] = field(default_factory=dict)
    pauses: dict[str, int] = field(default_factory=dict)  # how often each trial was paused
    final: set[str] = field(default_factory=set)  # resumed at the end: they run to their end
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (examples seen, value) per trial
    flagged: set[str] = field(default_factory=set)  # flagged by the margin-hacking guard
    completed: dict[str, float] = field(default_factory=dict)  # final values
    version: int = 0  # counts changes of the evidence: the scheduler asks again only after one
    rung: int | None = None  # breadth first: the first rung (the gate's unit), the next ones RUNG_FACTOR apart
    waited: dict[str, int] = field(default_factory=dict)  # breadth first: the highest rung each trial waited at
    reached: dict[str, int] = field(default_factory=dict)  # breadth first: each trial's last reported step

    def observe(self, trial_id: str, examples: int, value: Any, flagged: bool) -> None:
        """Every result of every trial: its value of the pruning metric and the guard's verdict."""
        if flagged and trial_id not in self.flagged:
            self.flagged.add(trial_id)
            self.version += 1
        if isinstance(value, int | float) and math.isfinite(value):
            self.curves.setdefault(trial_id, []).append((int(examples), float(value)))
            self.version += 1

    def may_pause(self, trial_id: str) -> bool:
        """False for a trial resumed at the end (it runs to its end) or paused MAX_PAUSES times already."""
        return trial_id not in self.final and self.pauses.get(trial_id, 0) < MAX_PAUSES

    def pause(self, trial_id: str, result: dict[str, Any], value: Any, reason: str, planned: int) -> Paused:
        number = value if isinstance(value, int | float) and math.isfinite(value) else None
        leader = self.leader(besides=trial_id)
        beaten = leader is not None and number is not None and self._beats(leader[1], number)
        paused = Paused(dict(result), number, reason, planned, leader[1] if beaten and leader else None)
        self.paused[trial_id] = paused
        self.pauses[trial_id] = self.pauses.get(trial_id, 0) + 1
        return paused

    def rung_of(self, step: int) -> int | None:
        """Breadth first: the highest rung at or below ``step`` (None below the first one, or not breadth first)."""
        if self.rung is None or step < self.rung:
            return None
        rung = self.rung
        while rung * RUNG_FACTOR <= step:
            rung *= RUNG_FACTOR
        return rung

    def behind(self, rung: int, besides: str, running: list[str]) -> bool:
        """Whether a trial other than ``besides`` (running, or waiting at an earlier rung) has yet to reach ``rung``
        (a trial paused below the bar may never come: it is not waited for)."""
        waiting = [t for t, p in self.paused.items() if p.waiting]
        return any(self.reached.get(t, 0) < rung for t in [*running, *waiting] if t != besides)

    def waits(self, trial_id: str, step: int, at_end: bool, to_start: bool, running: list[str],
              gate: PruningGate) -> bool:  # fmt: skip
        """Breadth first: whether a trial that just reported at ``step`` (the gate's unit) waits at its rung: trials
        are still to start (``to_start``) or other trials (``running``, or waiting) have yet to reach the rung; it
        has not waited there yet; this is not its last log, nor is it resumed at the end. Trials waiting at a lower
        rung that no trial is left to reach, and that are below the bar there, are first settled as paused below
        the bar (they are not waited for)."""
        self.reached[trial_id] = step
        rung = self.rung_of(step)
        if rung is None or at_end or trial_id in self.final or self.waited.get(trial_id, -1) >= rung:
            return False
        if to_start:
            return True
        for t in self.asking_order([t for t, p in self.paused.items() if p.waiting and t != trial_id]):
            if not self.behind(self.paused[t].rung, t, [*running, trial_id]):
                self._settle(t, gate)
        return self.behind(rung, trial_id, running)

    def wait(self, trial_id: str, result: dict[str, Any], value: Any, planned: int, below: str) -> Paused:
        """Pause a trial at its rung until no trial is left to reach it (``below``: why it stays paused if it is
        then below the bar)."""
        number = value if isinstance(value, int | float) and math.isfinite(value) else None
        rung = self.rung_of(self.reached[trial_id]) or 0
        where = f"the first rung (the warm-up point, {rung})" if rung == self.rung else f"the rung at {rung}"
        reason = f"breadth first: waits at {where} for the trials yet to reach it"
        paused = Paused(dict(result), number, reason, planned, waiting=True, rung=rung, below=below)
        self.paused[trial_id] = paused
        self.waited[trial_id] = rung
        return paused

    def resume(self, trial_id: str, final: bool = False) -> Paused:
        if final:
            self.final.add(trial_id)
        return self.paused.pop(trial_id)

    def complete(self, trial_id: str, value: Any) -> None:
        self.paused.pop(trial_id, None)
        self.version += 1
        if isinstance(value, int | float) and math.isfinite(value):
            self.completed[trial_id] = float(value)

    def forget(self, trial_id: str) -> None:
        self.paused.pop(trial_id, None)

    # -- decisions ------------------------------------------------------------------------------------------

    def why_resume(self, trial_id: str, gate: PruningGate, to_start: bool = False,
                   running: list[str] | None = None) -> str | None:  # fmt: skip
        """Why a paused trial should run again now, or None: the bar fell below it, or the leader no longer
        leads it (degraded, or flagged by the guard); a trial waiting at a rung, once no trial is left to reach it
        (none ``to_start``, none ``running`` or waiting short of it): it is above the bar there (else it stays
        paused as a trial below the bar)."""
        paused = self.paused[trial_id]
        if paused.waiting:
            if to_start or self.behind(paused.rung, trial_id, running or []):
                return None
            return self._settle(trial_id, gate)
        if trial_id in gate.curves and not gate.still_prunes(trial_id):
            return "the bar fell below it"
        if paused.beaten_by is None or paused.value is None:
            return None
        leader = self.leader(besides=trial_id)
        if leader is None or not self._beats(leader[1], paused.value):
            return "the leader no longer beats it" if leader else "every trial that beat it was flagged by the guard"
        return None

    def _settle(self, trial_id: str, gate: PruningGate) -> str | None:
        """A waiting trial that no trial is left to reach its rung: above the bar there, why it resumes; below it,
        None, and it stays paused as a trial below the bar."""
        paused = self.paused[trial_id]
        if not paused.waiting:
            return None
        if trial_id not in gate.curves or not gate.still_prunes(trial_id):
            return f"no trial is left to reach the rung ({paused.rung}) and it is above the bar there"
        self.pause(trial_id, paused.result, paused.value, paused.below, paused.planned)  # now below the bar there
        return None

    def asking_order(self, paused: list[str]) -> list[str]:
        """The order to ask ``paused`` trials (in start order) why they should resume: trials paused below the bar
        first, then trials waiting at a rung, lowest rung first (a trial judged at a lower rung may let the trials
        waiting at a higher one go on)."""
        return sorted(paused, key=lambda t: self.paused[t].rung if self.paused[t].waiting else -1)

    def leader(self, besides: str | None = None) -> tuple[str, float] | None:
        """The best latest value among the trials the guard has not flagged (running, paused or completed; a
        completed trial by its final value), ``besides`` left out."""
        latest = {t: c[-1][1] for t, c in self.curves.items() if c and t != besides and t not in self.flagged}
        latest.update({t: v for t, v in self.completed.items() if t != besides and t not in self.flagged})
        if not latest:
            return None
        pick = max if self.maximize else min
        best = pick(latest, key=lambda t: latest[t])
        return best, latest[best]

    def winner(self) -> float | None:
        """The best final value of the completed trials, unflagged ones first."""
        trusted = [v for t, v in self.completed.items() if t not in self.flagged] or list(self.completed.values())
        if not trusted:
            return None
        return max(trusted) if self.maximize else min(trusted)

    def upper_bound(self, trial_id: str) -> float | None:
        """The optimistic final value of a paused trial: the better of its best value so far and its tail's linear
        trend at its planned examples, plus NOISE_SIGMAS of its noise (in the direction of the goal)."""
        curve = self.curves.get(trial_id, [])
        if not curve:
            return None
        sign = 1.0 if self.maximize else -1.0
        values = [sign * v for _, v in curve]
        best = max(values)
        trend = _extrapolate([(x, sign * v) for x, v in curve[-TAIL:]], self.paused[trial_id].planned)
        noise = curve_noise([v for _, v in curve]) or 0.0
        return sign * (max(best, trend if trend is not None else best) + NOISE_SIGMAS * noise)

    def endgame(self) -> tuple[list[str], list[str]]:
        """Nothing else runs or is to come: (paused trials to resume to their end, best bound first; paused trials
        to prune). With no winner yet only the most promising one is resumed; the rest wait for its result."""
        bounds = {t: self.upper_bound(t) for t in self.paused}
        ranked = sorted(self.paused, key=lambda t: _key(bounds[t], self.maximize), reverse=True)
        winner = self.winner()
        if winner is None:
            return ranked[:1], []
        resume = [t for t in ranked if bounds[t] is not None and self._beats(bounds[t], winner)]  # type: ignore[arg-type]
        return resume, [t for t in ranked if t not in resume]

    def _beats(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b


def _key(value: float | None, maximize: bool) -> float:
    if value is None:
        return -math.inf
    return value if maximize else -value


def _extrapolate(points: list[tuple[int, float]], at: int) -> float | None:
    """A least-squares line through the points, evaluated at ``at``; None with fewer than 2 distinct x."""
    xs = [float(x) for x, _ in points]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(v for _, v in points) / len(points)
    slope = sum((x - mx) * (v - my) for x, (_, v) in zip(xs, points, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my + slope * (at - mx)


def event(kind: str, result: dict[str, Any], value: Any, reason: str, now: float) -> dict[str, Any]:
    """One line of <trial>/events.json: paused, resumed or pruned, with the examples seen at that moment."""
    return {
        "event": kind,
        "examples_seen": int(result.get(EXAMPLES_SEEN) or 0),
        "step": result.get(STEP),
        "value": value,
        "reason": reason,
        "time": round(now, 3),
    }


_BOOKS: dict[str, PauseBook] = {}


def pause_book(key: str, maximize: bool, rung: int | None = None) -> PauseBook:
    """The sweep's PauseBook (one per gate key, like the gate itself: Ray deep-copies the scheduler and the
    searcher, and both must see the same paused trials); ``rung``: breadth first, set when it is made."""
    book = _BOOKS.get(key)
    if book is None:
        book = _BOOKS[key] = PauseBook(maximize, rung=rung)
    return book


def sweep_book(settings: GateSettings) -> PauseBook:
    """The PauseBook of the sweep behind these gate settings (its rung at the warm-up point when breadth first)."""
    rung = warmup_steps(settings.config, settings.budget) if settings.config.get("breadth_first") else None
    return pause_book(settings.key, settings.direction == "maximize", rung)


def forget_book(key: str) -> None:
    _BOOKS.pop(key, None)
