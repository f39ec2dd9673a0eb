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
from sweeper.report.tables import row, table

# The held-out winner: best preference rate, ties broken by the mean log-prob margin.
RANK_KEYS = ("rate", "margin_mean")


# ---------------------------------------------------------------------------------------------
# Generations: length and repetition
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# The verdict: does the held-out winner agree with the sweep metric's?
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    agrees: bool
    metric_winner: str
    heldout_winner: str
    metric_winner_rate: float
    heldout_rate: float
    base_rate: float | None
    n: int
    tied_with: str | None = None  # the held-out winner by margin when it ties the metric's winner on the rate


def preference(record: dict[str, Any] | None) -> dict[str, Any]:
    """The preference block of an evaluation record ({} when the trial was not evaluated)."""
    if not record or record.get("status") != "evaluated":
        return {}
    return dict(record.get("preference") or {})


def heldout_winner(evaluations: dict[str, dict[str, Any] | None]) -> str | None:
    """The trial with the best held-out preference rate (ties: the larger mean log-prob margin), or None."""
    scored = {k: preference(v) for k, v in evaluations.items()}
    scored = {k: p for k, p in scored.items() if p.get("rate") is not None}
    if not scored:
        return None
    return max(scored, key=lambda k: tuple(float(scored[k].get(key) or 0.0) for key in RANK_KEYS))


def agreement(metric_winner: str | None, evaluations: dict[str, dict[str, Any] | None],
              base: dict[str, Any] | None = None) -> Agreement | None:  # fmt: skip
    """Compare the sweep metric's winner with the held-out winner; None when either is unknown. A tie on the
    held-out rate counts as agreement (the held-out set cannot tell the two apart)."""
    best = heldout_winner(evaluations)
    mine = preference(evaluations.get(metric_winner or ""))
    if metric_winner is None or best is None or mine.get("rate") is None:
        return None
    top = preference(evaluations[best])
    agrees = best == metric_winner or float(mine["rate"]) >= float(top["rate"])
    base_rate = preference(base).get("rate")
    return Agreement(agrees, metric_winner, metric_winner if agrees else best, float(mine["rate"]), float(top["rate"]),
                     None if base_rate is None else float(base_rate), int(top.get("n", 0)),
                     best if agrees and best != metric_winner else None)  # fmt: skip


def agreement_line(a: Agreement) -> str:
    """One verdict sentence, plain about a disagreement."""
    base = f"; base {a.base_rate:.0%}" if a.base_rate is not None else ""
    if a.agrees:
        line = (f"Held-out preference accuracy agrees: `{a.metric_winner}` also prefers the chosen answer most often "
                f"on {a.n} held-out pairs ({a.metric_winner_rate:.0%}{base}).")  # fmt: skip
        if a.tied_with:
            line += f" `{a.tied_with}` ties it on that rate with a larger log-prob margin."
        if a.base_rate is not None and a.metric_winner_rate <= a.base_rate:
            line += " But it does no better than the base model there: the training gain did not carry over."
        return line
    return (
        f"⚠ Held-out preference accuracy disagrees with the sweep metric: the metric's winner "
        f"`{a.metric_winner}` prefers the chosen answer on {a.metric_winner_rate:.0%} of {a.n} held-out pairs, "
        f"the held-out winner `{a.heldout_winner}` on {a.heldout_rate:.0%}{base}. Check both before choosing."
    )


def samples_text(name: str, prompts: Sequence[dict[str, str]], models: Sequence[tuple[str, list[dict[str, Any]]]],
                 max_new_tokens: int, seed: int) -> str:  # fmt: skip
    """reports/<name>/samples.md: each held-out prompt with the greedy answers of the base and the top trials,
    their lengths and repetition, and a summary table first. ``models``: (label, samples) in display order."""
    lines = [f"# Generation samples: {name}", "",
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


def verdict_line(sweep: Any, best: Any) -> str | None:
    """The agreement line for the report's verdict, or None when the sweep was not evaluated."""
    if best is None or not has_evaluation(sweep):
        return None
    a = agreement(best.trial_id, {t.trial_id: t.evaluation for t in sweep.trials},
                  sweep.base_evaluation[0] if sweep.base_evaluation else None)  # fmt: skip
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
    bases = {b.get("label", "base"): preference(b).get("rate") for b in sweep.base_evaluation}
    for b in sweep.base_evaluation:
        lines.append(_row(f"{b.get('label', 'base')}", b, None, sets))
    for t in sweep.trials:
        if t.evaluation is None:
            continue
        mark = (" ★" if best is not None and t is best else "") + (" ▲" if t.trial_id == top else "")
        base_rate = bases.get(t.evaluation.get("base") or "base")
        lines.append(_row(f"`{t.trial_id}`{mark}", t.evaluation, base_rate, sets))
    records = [r for r in [*sweep.base_evaluation, *evaluations.values()] if r and r.get("status") == "evaluated"]
    first = next((preference(r) for r in records if preference(r)), {})
    n, unscorable, truncated = first.get("n", 0), first.get("n_unscorable", 0), first.get("n_truncated")
    chance = {name: next((r["multiple_choice"][name].get("chance") for r in records
                          if name in (r.get("multiple_choice") or {})), None) for name in sets}  # fmt: skip
    notes = [f"On {n} held-out pairs (`data/test.jsonl`): **pref rate** = share where log p(chosen) > log p(rejected)"
             " under the model alone (summed over the answer's tokens; **per token**: length-normalised); **log-prob "
             "margin** = mean summed difference; **reward accuracy** = DPO's implicit reward against the base as "
             "reference ranks chosen first. ★ sweep metric's winner, ▲ held-out winner."]  # fmt: skip
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


def _row(label: str, record: dict[str, Any], base_rate: float | None, sets: list[str]) -> str:
    if record.get("status") != "evaluated":
        reason = record.get("reason") or "?"
        return row([label, f"{record.get('status', '?')}: {reason}", *["-"] * (8 + len(sets))])
    p, g = record.get("preference") or {}, record.get("generation") or {}
    mc = record.get("multiple_choice") or {}
    delta = None if base_rate is None or p.get("rate") is None else p["rate"] - base_rate
    cells = [label, "evaluated", _pct(p.get("rate")), "-" if delta is None else f"{delta * 100:+.0f} pts",
             _pct(p.get("rate_norm")), _signed(p.get("margin_mean")), _pct(p.get("reward_accuracy")),
             *[f"{_pct(mc[s].get('accuracy'))} ({_pct(mc[s].get('accuracy_norm'))})" if s in mc else "-" for s in sets],
             _f(g.get("n_tokens")), _f(g.get("distinct_2")), _f(record.get("seconds"))]  # fmt: skip
    return row(cells)


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3g}"
