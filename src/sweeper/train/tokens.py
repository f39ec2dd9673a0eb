"""What tokenization does to preference pairs, counted the way TRL 1.16's DPOTrainer tokenizes them.

Light module: it takes a tokenizer object and imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading token ids two sequences share (where a tokenized prompt ends inside prompt + answer)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def length_report(tokenizer, rows: list[dict[str, str]], max_length: int) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """What ``max_length`` does to these rendered pairs, tokenized as TRL 1.16's DPOTrainer does (the prompt ends
    where prompt and prompt + answer diverge): ``dropped``, the prompt alone fills it (TRL filters the pair out
    of training; held-out evaluation cannot score it); ``truncated``, prompt + an answer + EOS is longer (the
    answer is cut: keep_start)."""

    def ids(texts: list[str]) -> list[list[int]]:
        return list(tokenizer(texts)["input_ids"]) if texts else []

    prompts = ids([r["prompt"] for r in rows])
    chosen = ids([r["prompt"] + r["chosen"] for r in rows])
    rejected = ids([r["prompt"] + r["rejected"] for r in rows])
    dropped = truncated = 0
    for p, c, r in zip(prompts, chosen, rejected, strict=True):
        start = min(common_prefix(p, c), common_prefix(p, r))
        if start >= max_length:
            dropped += 1
        elif max(len(c), len(r)) + 1 > max_length:  # + EOS
            truncated += 1
    return {"n": len(rows), "dropped": dropped, "truncated": truncated, "max_length": max_length}


def length_percentiles(tokenizer, rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:  # type: ignore[no-untyped-def]
    """Token counts of the rendered prompt, and of each answer as TRL sees it (prompt + answer minus the prompt, EOS
    included): p50, p90, p95 and max per part, plus the longest full sequence (prompt + the longer answer)."""
    if not rows:
        return {}
    prompts = list(tokenizer([r["prompt"] for r in rows])["input_ids"])
    out: dict[str, list[int]] = {"prompt": [len(p) for p in prompts], "chosen": [], "rejected": [], "sequence": []}
    longest = [0] * len(rows)
    for key in ("chosen", "rejected"):
        full = list(tokenizer([r["prompt"] + r[key] for r in rows])["input_ids"])
        for i, (p, f) in enumerate(zip(prompts, full, strict=True)):
            out[key].append(len(f) - common_prefix(p, f) + 1)  # + EOS
            longest[i] = max(longest[i], len(f) + 1)
    out["sequence"] = longest
    return {name: _percentiles(values) for name, values in out.items()}


def _percentiles(values: list[int]) -> dict[str, int]:
    ordered = sorted(values)

    def at(q: float) -> int:  # nearest rank
        return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]

    return {"p50": at(0.5), "p90": at(0.9), "p95": at(0.95), "max": ordered[-1]}
