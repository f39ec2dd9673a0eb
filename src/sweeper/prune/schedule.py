"""The replay's simulated scheduler: recorded curves run ``concurrency`` at a time through a pruning gate, and a
trial below the bar stops or, with ``on_prune: pause``, waits while the PauseBook decides when it runs again.

It mirrors the live Ray scheduler (sweeper.tune.raytune, ``OptunaPruningScheduler``) decision for decision:

- every logged value is observed by the PauseBook (a pausing sweep), then reported to the gate;
- breadth first, a trial that reaches a rung while trials are still queued, or running or waiting short of the
  rung, waits there, paused;
- a trial the gate would prune, at a point that is not its planned end, is paused: its slot frees and the
  examples it trained so far are spent; a trial resumed at the end runs on to its end, and one already paused
  ``MAX_PAUSES`` times is pruned for good;
- a free slot goes to the next new trial first; else to the first paused trial (in start order) the PauseBook
  gives a reason to resume; with nothing running and nothing left to start, the PauseBook's endgame prunes the
  paused trials whose upper bound cannot beat the winner and resumes the best of the others to its end, one at a
  time (the next endgame waits for its result, as live, where "finished" means no trial running);
- a resumed trial continues from where it paused: its later points are replayed from then on, and compute
  counts every example it trained once.

Time is measured in examples seen, every trial at the same speed. The replay knows the margin-hacking guard's
verdict on a whole recorded curve only, so a flagged curve counts as flagged from its last point on (live, the
guard may flag it earlier). Plain Python: no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeper.prune.guard import is_flagged
from sweeper.prune.pause import PauseBook
from sweeper.records.metrics import EXAMPLES_SEEN

if TYPE_CHECKING:
    from sweeper.prune.replay import Curve, Outcome

# The reason a replayed trial is paused or pruned (live: "<pruner> pruner on <metric>").
BELOW_BAR = "below the pruner's bar"


@dataclass
class _Run:
    curve: Curve
    start: int  # the clock when it would have seen 0 examples (a resumed trial: the clock then - its examples)
    index: int = 0  # its next point


def run(queue: list[Curve], gate: Any, outcome: Outcome, concurrency: int, book: PauseBook | None) -> None:
    """Replay the curves in ``queue`` order into ``outcome`` (pruned, spent, pauses, resumes, events)."""
    running: list[_Run] = []
    waiting: dict[str, _Run] = {}  # paused trials, in the order they started (the controller's order, live)
    started: list[str] = []
    clock = 0
    while True:
        while len(running) < concurrency:
            if queue:  # new trials first
                curve = queue.pop(0)
                gate.add(curve.trial_id)
                started.append(curve.trial_id)
                running.append(_Run(curve, clock))
                continue
            picked = _pick(book, gate, waiting, started, running, outcome) if book is not None else None
            if picked is None:
                break
            trial_id, why, final = picked
            paused = book.resume(trial_id, final=final)  # type: ignore[union-attr]
            outcome.note(trial_id, "resumed", paused.examples_seen, why)
            again = waiting.pop(trial_id)
            running.append(_Run(again.curve, clock - paused.examples_seen, again.index))
        if not running:
            return
        i = min(range(len(running)), key=lambda k: _next_at(running[k]))
        r = running[i]
        curve, tid = r.curve, r.curve.trial_id
        if r.index == len(curve.points):  # resumed after its last recorded point (a truncated curve): it ends
            clock = r.start + curve.total
            _complete(gate, book, outcome, running.pop(i), curve.points[-1][1])
            continue
        step, value = curve.points[r.index]
        clock = r.start + step
        last = r.index + 1 == len(curve.points)
        if book is not None:
            book.observe(tid, step, value, flagged=last and is_flagged(curve.guard))
        below = gate.report(tid, step, value)
        others = [o.curve.trial_id for o in running if o is not r] if book is not None and book.rung else []
        if book is not None and book.waits(tid, step, last, bool(queue), others, gate):
            book.wait(tid, {EXAMPLES_SEEN: step}, value, curve.total, BELOW_BAR)
            outcome.note(tid, "paused", step, book.paused[tid].reason)
            r.index += 1
            waiting[tid] = running.pop(i)
            continue
        if below and not (last and curve.final is not None):
            if book is not None and tid in book.final:
                pass  # resumed at the end: it runs to its end
            elif book is not None and book.may_pause(tid):
                book.pause(tid, {EXAMPLES_SEEN: step}, value, BELOW_BAR, curve.total)
                outcome.note(tid, "paused", step, BELOW_BAR)
                r.index += 1
                waiting[tid] = running.pop(i)
                continue
            else:
                gate.prune(tid)
                if book is not None:
                    book.forget(tid)
                    outcome.note(tid, "pruned", step, BELOW_BAR)
                outcome.pruned[tid] = step
                outcome.spent += step
                running.pop(i)
                continue
        if last:
            clock = r.start + curve.total
            _complete(gate, book, outcome, running.pop(i), curve.final if curve.final is not None else value)
        else:
            r.index += 1


def _next_at(r: _Run) -> int:
    points = r.curve.points
    return r.start + (points[r.index][0] if r.index < len(points) else r.curve.total)


def _complete(gate: Any, book: PauseBook | None, outcome: Outcome, r: _Run, value: float) -> None:
    gate.complete(r.curve.trial_id, value)
    if book is not None:
        book.complete(r.curve.trial_id, value)
    outcome.spent += r.curve.total


def _pick(book: PauseBook, gate: Any, waiting: dict[str, _Run], started: list[str], running: list[_Run],
          outcome: Outcome) -> tuple[str, str, bool] | None:  # fmt: skip
    """The paused trial to resume into a free slot (id, why, resumed at the end?), as choose_trial_to_run picks it;
    at the end, the paused trials that cannot beat the winner are pruned where they paused."""
    order = book.asking_order([t for t in started if t in waiting])
    if not order:
        return None
    ids = [r.curve.trial_id for r in running]
    for t in order:
        why = book.why_resume(t, gate, running=ids)
        if why is not None:
            return t, why, False
    if running:
        return None  # the evidence may still change
    resume, prune = book.endgame()
    winner = book.winner()
    for t in order:
        if t in prune:
            seen = book.paused[t].examples_seen
            why = f"its upper bound {_num(book.upper_bound(t))} cannot beat the winner's {_num(winner)}"
            gate.prune(t)
            book.forget(t)
            waiting.pop(t)
            outcome.note(t, "pruned", seen, why)
            outcome.pruned[t] = seen
            outcome.spent += seen
    if not resume:
        return None
    bound = _num(book.upper_bound(resume[0]))
    why = (f"its upper bound {bound} could beat the winner's {_num(winner)}" if winner is not None else
           f"no trial completed: the paused trial with the best upper bound ({bound})")  # fmt: skip
    return resume[0], why, True


def _num(value: Any) -> str:
    return "none" if not isinstance(value, int | float) else f"{value:.4g}"
