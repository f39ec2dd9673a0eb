"""Figures of the held-out evaluation, from plain numbers: preference rates, generation statistics, the verdict.

The model work (log-probs, greedy answers, option likelihoods) is in ``sweeper.train.evaluate``; this module turns
its per-row numbers into rates and reads the records back for the report. Light module: no torch, no ray.

Records (``trials/<name>/<trial>/evaluation.json`` and ``trials/<name>/evaluation_base.json``) hold
``{"status": "evaluated" | "skipped" | "error", "reason", "preference": {...}, "generation": {...},
"multiple_choice": {set: {...}}, "samples": [{"prompt", "answer", "n_tokens"}], "seconds", "device"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.records.heldout import answer_stats, generation_metrics
from sweeper.report.evidence import (
    DEGENERATE_DISTINCT2_DROP,
    DEGENERATE_REPEAT,
    MAX_PAIRS,
    Rate,
    degeneration,
    pairs_needed,
)
from sweeper.report.tables import row, table

# The held-out winner: best preference rate, ties broken by the mean log-prob margin.
RANK_KEYS = ("rate", "margin_mean")


# ---------------------------------------------------------------------------------------------
# The verdict: does the held-out winner agree with the sweep metric's?
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """The sweep metric's winner against the held-out leader and the base, on 95% Wilson intervals.

    ``heldout_winner`` is always the trial with the top held-out rate (ties: the larger log-prob margin), the one
    the report's table marks ▲. ``agrees`` is the one rule text and table share: no trial's interval lies wholly
    above the metric winner's (a leader inside the noise does not contradict the metric).
    """

    agrees: bool
    metric_winner: str
    heldout_winner: str
    winner: Rate
    leader: Rate
    base: Rate | None

    @property
    def separated(self) -> bool:
        return not self.agrees


def preference(record: dict[str, Any] | None) -> dict[str, Any]:
    """The preference block of an evaluation record ({} when the trial was not evaluated)."""
    if not record or record.get("status") != "evaluated":
        return {}
    return dict(record.get("preference") or {})


def rate_of(record: dict[str, Any] | None) -> Rate | None:
    """The held-out preference rate of a record as k of n pairs, or None."""
    p = preference(record)
    return Rate.of(p.get("rate"), p.get("n"))


def heldout_winner(evaluations: dict[str, dict[str, Any] | None]) -> str | None:
    """The trial with the best held-out preference rate (ties: the larger mean log-prob margin), or None."""
    scored = {k: preference(v) for k, v in evaluations.items()}
    scored = {k: p for k, p in scored.items() if p.get("rate") is not None}
    if not scored:
        return None
    return max(scored, key=lambda k: tuple(float(scored[k].get(key) or 0.0) for key in RANK_KEYS))


def agreement(metric_winner: str | None, evaluations: dict[str, dict[str, Any] | None],
              base: dict[str, Any] | None = None) -> Agreement | None:  # fmt: skip
    """Compare the sweep metric's winner with the held-out leader (and the base); None when either is unknown."""
    best = heldout_winner(evaluations)
    mine = rate_of(evaluations.get(metric_winner or ""))
    if metric_winner is None or best is None or mine is None:
        return None
    top = rate_of(evaluations[best])
    assert top is not None  # heldout_winner only returns scored trials
    return Agreement(not top.above(mine), metric_winner, best, mine, top, rate_of(base))


def agreement_line(a: Agreement) -> str:
    """The verdict's held-out sentences: winner vs held-out leader, then vs base, each said only as far as the
    95% Wilson intervals on the held-out pairs allow."""
    n = a.winner.n
    if a.heldout_winner == a.metric_winner:
        line = (f"Held-out evidence agrees: `{a.metric_winner}` prefers the chosen answer most often, on "
                f"{a.winner.text()} of {n} held-out pairs (95% Wilson interval).")  # fmt: skip
    elif a.agrees:
        line = (f"Held-out evidence cannot tell the metric's winner `{a.metric_winner}` ({a.winner.text()}) from the "
                f"held-out leader `{a.heldout_winner}` ▲ ({a.leader.text()}) on {n} pairs: the 95% intervals "
                "overlap, so it does not contradict the metric.")  # fmt: skip
    else:
        return (f"⚠ Held-out evidence disagrees with the sweep metric: the held-out leader `{a.heldout_winner}` ▲ "
                f"prefers the chosen answer on {a.leader.text()} of {n} held-out pairs, the metric's winner "
                f"`{a.metric_winner}` on {a.winner.text()} (95% intervals apart). Check both before choosing."
                + _against_base(a))  # fmt: skip
    return line + _against_base(a)


def _against_base(a: Agreement) -> str:
    if a.base is None:
        return ""
    base = f"the base model ({a.base.text()})"
    if a.winner.above(a.base):
        return f" Against {base} it is better beyond noise."
    if a.winner.p <= a.base.p:
        return f" But it does no better than {base}: the training gain did not carry over."
    need = pairs_needed(a.winner.p, a.base.p)
    grow = f"about {need:,} held-out pairs" if need is not None else f"more than {MAX_PAIRS:,} held-out pairs"
    return (f" Against {base} the gain is within noise: the held-out set is too small to call it; at these rates "
            f"{grow} would tell them apart ({a.base.n} now; `data.test_size`).")  # fmt: skip


def degenerate_flag(record: dict[str, Any] | None, base: dict[str, Any] | None) -> str | None:
    """The degeneration finding of a trial's greedy samples against the base's (sweeper.report.evidence)."""
    if not record or not base:
        return None
    return degeneration(record.get("generation"), base.get("generation"))


RANDOM_MODEL_NOTE = ("The base model is sweeper's builtin **random** tiny model (`builtin:tiny-mistral`, 2 layers, "
                     "random weights): its answers are noise, not language. The samples only show that the "
                     "trained adapters moved it towards the chosen answers' words.")  # fmt: skip


def samples_text(name: str, prompts: Sequence[dict[str, str]], models: Sequence[tuple[str, list[dict[str, Any]]]],
                 max_new_tokens: int, seed: int, random_model: bool = False) -> str:  # fmt: skip
    """reports/<name>/samples.md: each held-out prompt with the greedy answers of the base and the top trials,
    their lengths and repetition, and a summary table first. ``models``: (label, samples) in display order;
    ``random_model`` says so up front (the builtin tiny model)."""
    lines = [f"# Generation samples: {name}", "", *([RANDOM_MODEL_NOTE, ""] if random_model else []),
             f"Greedy answers (max_new_tokens {max_new_tokens}) to {len(prompts)} held-out prompts picked with seed "
             f"{seed}. distinct-2: unique word bigrams / all; repeated 3-grams: share of word trigrams that occur more"
             " than once (loops approach 1).", "",
             "| model | mean tokens | hit the cap | distinct-1 | distinct-2 | repeated 3-grams |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, samples in models:
        g = generation_metrics(samples, max_new_tokens)
        lines.append(f"| {label} | {_f(g.get('n_tokens'))} | {_pct(g.get('hit_cap'))} | {_f(g.get('distinct_1'))} | "
                     f"{_f(g.get('distinct_2'))} | {_f(g.get('repeated_3gram'))} |")  # fmt: skip
    for i, prompt in enumerate(prompts):
        lines += ["", f"## Prompt {i + 1}", "", "```text", prompt["prompt"].strip(), "```", "",
                  f"Held-out chosen: {_quote(prompt.get('chosen', ''))}", ""]  # fmt: skip
        lines += ["| model | answer | tokens | distinct-2 | repeated 3-grams |", "|---|---|---|---|---|"]
        for label, samples in models:
            if i >= len(samples):
                continue
            s = answer_stats(samples[i]["answer"], int(samples[i]["n_tokens"]))
            lines.append(f"| {label} | {_quote(samples[i]['answer'])} | {s['n_tokens']} | {_f(s['distinct_2'])} | "
                         f"{_f(s['repeated_3gram'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    # control characters (an untrained model emits raw bytes) would garble the markdown: shown as U+FFFD
    text = "".join(c if c.isprintable() or c.isspace() else "\ufffd" for c in text)
    flat = " ".join(text.split()).replace("|", "\\|")
    return f"“{flat}”" if flat else "(empty)"


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"


# ---------------------------------------------------------------------------------------------
# The report's "Held-out evaluation" section and verdict line (pure: records in, markdown lines out)
# ---------------------------------------------------------------------------------------------


def heldout_columns(record: dict[str, Any] | None) -> dict[str, Any]:
    """A trial's held-out figures as flat columns of trials.csv."""
    p = preference(record)
    return {"heldout_pref_rate": p.get("rate"), "heldout_pref_rate_norm": p.get("rate_norm"),
            "heldout_margin": p.get("margin_mean"), "heldout_reward_accuracy": p.get("reward_accuracy")}  # fmt: skip


def has_evaluation(sweep: Any) -> bool:
    return bool(sweep.base_evaluation) or any(t.evaluation for t in sweep.trials)


def base_of(sweep: Any, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The base evaluation a trial's record was scored against (its ``base`` label), else the first base."""
    bases = {b.get("label", "base"): b for b in sweep.base_evaluation}
    label = (record or {}).get("base") or "base"
    return bases.get(label) or (sweep.base_evaluation[0] if sweep.base_evaluation else None)


def verdict_line(sweep: Any, best: Any) -> str | None:
    """The agreement line for the report's verdict, or None when the sweep was not evaluated."""
    if best is None or not has_evaluation(sweep):
        return None
    a = agreement(best.trial_id, {t.trial_id: t.evaluation for t in sweep.trials}, base_of(sweep, best.evaluation))
    if a is None:
        record = best.evaluation or {}
        why = record.get("reason") or "it has no evaluation record"
        return f"Held-out evaluation: the winner `{best.trial_id}` was not evaluated ({why})."
    return agreement_line(a)


def heldout_section(sweep: Any, best: Any) -> list[str]:
    """Base as row zero, then every trial: preference rates on the held-out pairs, multiple-choice accuracy,
    sample length and repetition. ★ = the sweep metric's winner, ▲ = the held-out winner."""
    evaluations = {t.trial_id: t.evaluation for t in sweep.trials}
    top = heldout_winner(evaluations)
    sets = list(dict.fromkeys(name for r in [*sweep.base_evaluation, *evaluations.values()] if r
                              for name in (r.get("multiple_choice") or {})))  # fmt: skip
    head = ["model", "status", "pref rate", "Δ vs base", "per token", "log-prob margin", "reward accuracy",
            *[f"{name} acc (norm)" for name in sets], "sample tokens", "distinct-2", "eval s"]  # fmt: skip
    lines = table(head)
    for b in sweep.base_evaluation:
        lines.append(_row(f"{b.get('label', 'base')}", b, None, sets))
    flagged = 0
    for t in sweep.trials:
        if t.evaluation is None:
            continue
        mark = (" ★" if best is not None and t is best else "") + (" ▲" if t.trial_id == top else "")
        base = base_of(sweep, t.evaluation)
        degenerate = degenerate_flag(t.evaluation, base)
        flagged += degenerate is not None
        lines.append(_row(f"`{t.trial_id}`{mark}", t.evaluation, preference(base).get("rate"), sets, degenerate))
    records = [r for r in [*sweep.base_evaluation, *evaluations.values()] if r and r.get("status") == "evaluated"]
    first = next((preference(r) for r in records if preference(r)), {})
    n, unscorable, truncated = first.get("n", 0), first.get("n_unscorable", 0), first.get("n_truncated")
    chance = {name: next((r["multiple_choice"][name].get("chance") for r in records
                          if name in (r.get("multiple_choice") or {})), None) for name in sets}  # fmt: skip
    notes = [f"On {n} held-out pairs (`data/test.jsonl`): **pref rate** = share where log p(chosen) > log p(rejected)"
             " under the model alone (summed over the answer's tokens; **per token**: length-normalised); **log-prob "
             "margin** = mean summed difference; **reward accuracy** = DPO's implicit reward against the base as "
             "reference ranks chosen first; [lo–hi] = 95% Wilson interval of the rate. ★ sweep metric's winner, "
             "▲ held-out leader (top rate; ties: larger margin)."]  # fmt: skip
    if flagged:
        notes.append(f"⚠ on distinct-2: {flagged} trial(s) whose greedy samples degenerate against the base's "
                     f"(repeated word trigrams ≥ {DEGENERATE_REPEAT:g} and twice the base's, distinct-2 "
                     f"{DEGENERATE_DISTINCT2_DROP:g} below it, or answers under half the base's length).")  # fmt: skip
    if unscorable or truncated:
        notes.append(
            f"{unscorable} held-out pair(s) left out: the prompt alone fills `data.max_length`, so no answer token "
            "is left to score (they are neither wins nor losses)"
            + (f"; in {truncated} of the {n + unscorable} the max_length cuts an answer (scored on what is left)"
               if truncated else "") + "."
        )  # fmt: skip
    if sets:
        notes.append(
            "Multiple choice: each option's log-likelihood as the answer, accuracy of the most likely "
            "(norm: per token); chance " + ", ".join(f"{k} {_pct(v)}" for k, v in chance.items()) + "."
        )
    if any(b.get("samples") for b in sweep.base_evaluation):
        notes.append(f"Greedy answers side by side: [samples.md]({sweep.name}/samples.md).")
    return lines + [line for note in notes for line in ("", note)]


def _row(label: str, record: dict[str, Any], base_rate: float | None, sets: list[str],
         degenerate: str | None = None) -> str:  # fmt: skip
    if record.get("status") != "evaluated":
        reason = record.get("reason") or "?"
        return row([label, f"{record.get('status', '?')}: {reason}", *["-"] * (8 + len(sets))])
    p, g = record.get("preference") or {}, record.get("generation") or {}
    mc = record.get("multiple_choice") or {}
    delta = None if base_rate is None or p.get("rate") is None else p["rate"] - base_rate
    rate = Rate.of(p.get("rate"), p.get("n"))
    cells = [label, "evaluated", rate.text() if rate else "-", "-" if delta is None else f"{delta * 100:+.0f} pts",
             _pct(p.get("rate_norm")), _signed(p.get("margin_mean")), _pct(p.get("reward_accuracy")),
             *[f"{_pct(mc[s].get('accuracy'))} ({_pct(mc[s].get('accuracy_norm'))})" if s in mc else "-" for s in sets],
             _f(g.get("n_tokens")), _f(g.get("distinct_2")) + (" ⚠" if degenerate else ""),
             _f(record.get("seconds"))]  # fmt: skip
    return row(cells)


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3g}"
