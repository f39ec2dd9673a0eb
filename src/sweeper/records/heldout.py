"""The numbers of a held-out evaluation record, from plain inputs: preference rates, choice accuracy, generation
statistics.

The model work (log-probs, greedy answers, option likelihoods) is in ``sweeper.train.evaluate``; these functions
turn its per-row numbers into what ``evaluation.json`` holds. Light module: no torch, no ray.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

# One held-out pair's log-probs: summed over the answer's tokens, and the token counts.
PairLogps = tuple[float, int, float, int]  # chosen sum, chosen tokens, rejected sum, rejected tokens


def preference_metrics(policy: Sequence[PairLogps], reference: Sequence[PairLogps] | None,
                       beta: float | None) -> dict[str, Any]:  # fmt: skip
    """Rates on held-out pairs: logp(chosen) > logp(rejected) under the policy alone (summed and per token), the
    mean log-prob margin, and, against the reference, DPO's implicit-reward accuracy and mean reward margin.

    A reference of None (the base row: the policy is the reference) leaves the reward figures out. A pair whose
    prompt alone fills max_length has no answer token left to score (both sums 0): it is excluded from every
    rate, not counted as a loss, and ``n_unscorable`` says how many were.
    """
    if reference is not None and len(reference) != len(policy):
        raise ValueError(f"reference has {len(reference)} pairs, policy {len(policy)}: score the same rows")
    keep = [i for i, (_, nc, _, nr) in enumerate(policy) if nc > 0 and nr > 0]
    unscorable = len(policy) - len(keep)
    policy = [policy[i] for i in keep]
    reference = None if reference is None else [reference[i] for i in keep]
    n = len(policy)
    if n == 0:
        return {"n": 0, **({"n_unscorable": unscorable} if unscorable else {})}
    margins = [c - r for c, _, r, _ in policy]
    norm = [c / max(nc, 1) - r / max(nr, 1) for c, nc, r, nr in policy]
    out: dict[str, Any] = {
        "n": n,
        "n_unscorable": unscorable,
        "rate": sum(m > 0 for m in margins) / n,
        "rate_norm": sum(m > 0 for m in norm) / n,
        "margin_mean": sum(margins) / n,
        "margin_norm_mean": sum(norm) / n,
        "logps_chosen_mean": sum(p[0] for p in policy) / n,
        "logps_rejected_mean": sum(p[2] for p in policy) / n,
    }
    if reference is not None:
        # DPO's implicit reward: beta * (log pi - log ref); its sign does not depend on beta.
        rewards = [(p[0] - q[0]) - (p[2] - q[2]) for p, q in zip(policy, reference, strict=True)]
        out["reward_accuracy"] = sum(r > 0 for r in rewards) / n
        if beta is not None:
            out["reward_margin_mean"] = beta * sum(rewards) / n
    return out


def choice_metrics(scores: Sequence[Sequence[tuple[float, int]]], answers: Sequence[int]) -> dict[str, Any]:
    """Multiple-choice accuracy from each option's (summed log-likelihood, tokens): argmax of the sum, and of the
    per-token mean (``accuracy_norm``, which does not favour short options); ``chance`` is the mean 1/options."""
    n = len(scores)
    if n == 0:
        return {"n": 0}
    hits = hits_norm = 0
    for options, answer in zip(scores, answers, strict=True):
        hits += _argmax([s for s, _ in options]) == answer
        hits_norm += _argmax([s / max(k, 1) for s, k in options]) == answer
    return {"n": n, "accuracy": hits / n, "accuracy_norm": hits_norm / n,
            "chance": sum(1 / len(o) for o in scores) / n}  # fmt: skip


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def words(text: str) -> list[str]:
    return text.lower().split()


def distinct_n(tokens: Sequence[str], n: int) -> float | None:
    """Unique n-grams / all n-grams (1.0 = no n-gram repeats); None when the text has fewer than n tokens."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_ngram_ratio(tokens: Sequence[str], n: int = 3) -> float | None:
    """Share of n-grams that occur more than once in the text (0 = none; degenerate loops approach 1)."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return None
    counts = Counter(grams)
    return sum(1 for g in grams if counts[g] > 1) / len(grams)


def answer_stats(answer: str, n_tokens: int) -> dict[str, Any]:
    w = words(answer)
    return {"n_tokens": n_tokens, "n_words": len(w), "distinct_1": distinct_n(w, 1), "distinct_2": distinct_n(w, 2),
            "repeated_3gram": repeated_ngram_ratio(w, 3)}  # fmt: skip


def generation_metrics(samples: Sequence[dict[str, Any]], max_new_tokens: int) -> dict[str, Any]:
    """Means over a model's sample answers (``{"answer", "n_tokens"}``); ``hit_cap`` = share cut at max_new_tokens."""
    if not samples:
        return {"n": 0}
    stats = [answer_stats(s["answer"], int(s["n_tokens"])) for s in samples]
    out: dict[str, Any] = {"n": len(stats), "hit_cap": sum(s["n_tokens"] >= max_new_tokens for s in stats) / len(stats)}
    for key in ("n_tokens", "n_words", "distinct_1", "distinct_2", "repeated_3gram"):
        values = [s[key] for s in stats if s[key] is not None]
        out[key] = sum(values) / len(values) if values else None
    return out
