"""Data preparation in the driver, once per sweep: load, validate, split and render with the chat template.

Every trial then trains on exactly the same rows (shipped through Ray's object store, so cluster
nodes need no shared disk for them). Heavy module: loads the tokenizer through transformers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.config.spec import Spec
from sweeper.data.rows import (
    RowReport,
    format_rows,
    load_valid_rows,
    make_prompt_renderer,
    split_rows,
    template_accepts_system,
)
from sweeper.train.tokens import length_percentiles, length_report


@dataclass(frozen=True)
class PreparedData:
    train: list[dict[str, str]]
    test: list[dict[str, str]]
    rows: RowReport
    system_turn: str  # how the system prompt was rendered: "system role" or "user/assistant/user workaround"
    tokens_per_example: float  # chosen + rejected sequences (prompt included), truncated to max_length
    # per split, what data.max_length does to the pairs: {"n", "dropped", "truncated", "max_length"}
    lengths: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "rows": self.rows.summary(),
            "format": self.rows.format,
            "n_train": len(self.train),
            "n_test": len(self.test),
            "system_turn": self.system_turn,
            "tokens_per_example": round(self.tokens_per_example, 1),
            "lengths": self.lengths,
        }


# A launch warns when max_length leaves out more than this share of a split's pairs.
MAX_DROPPED_SHARE = 0.10


def length_lines(lengths: dict[str, dict[str, int]]) -> list[str]:
    """The launch's lines on max_length: dropped and cut pairs per split, and a warning past MAX_DROPPED_SHARE."""
    parts, lines = [], []
    for split, name in (("train", "train"), ("test", "held-out")):
        got = lengths.get(split)
        if not got or not got["n"]:
            continue
        parts.append(f"{got['dropped']} of {got['n']} {name} pairs dropped (the prompt alone fills it), "
                     f"{got['truncated']} with an answer cut")  # fmt: skip
        if got["dropped"] > MAX_DROPPED_SHARE * got["n"]:
            lines.append(f"  WARNING: data.max_length {got['max_length']} leaves out {got['dropped']} of {got['n']} "
                         f"{name} pairs ({got['dropped'] / got['n']:.0%}, over {MAX_DROPPED_SHARE:.0%}): raise "
                         "data.max_length, or shorten the prompts")  # fmt: skip
    if not parts:
        return []
    if not any(got["dropped"] or got["truncated"] for got in lengths.values()):
        return [f"  max_length {next(iter(lengths.values()))['max_length']}: no pair dropped, no answer cut"]
    max_length = next(iter(lengths.values()))["max_length"]
    return [f"  max_length {max_length}: " + "; ".join(parts), *lines]


def load_tokenizer(spec: Spec):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from sweeper.train.models import resolve_model

    model = spec.model
    return AutoTokenizer.from_pretrained(
        resolve_model(model.name_or_path), revision=model.revision, trust_remote_code=model.trust_remote_code
    )


def prepare_data(spec: Spec) -> PreparedData:
    data = spec.data
    rows, report = load_valid_rows(data.path, data.format, data.split, data.columns, data.name)
    if data.max_rows is not None and len(rows) > data.max_rows:
        rows = random.Random(spec.training.seed).sample(rows, data.max_rows)
    train, test = split_rows(rows, data.test_size, seed=spec.training.seed)
    tokenizer = load_tokenizer(spec)
    render = make_prompt_renderer(tokenizer)
    turn = "system role" if template_accepts_system(tokenizer) else "user/assistant/user workaround"
    train_rows, test_rows = format_rows(train, report.format, render), format_rows(test, report.format, render)
    tokens = mean_tokens(tokenizer, train_rows[:256], data.max_length)
    lengths = {name: length_report(tokenizer, split, data.max_length)
               for name, split in (("train", train_rows), ("test", test_rows))}  # fmt: skip
    return PreparedData(train_rows, test_rows, report, turn, tokens, lengths)


def mean_tokens(tokenizer, rows: list[dict[str, str]], max_length: int) -> float:  # type: ignore[no-untyped-def]
    """Tokens one example costs (what TRL's num_tokens counts): prompt+chosen and prompt+rejected."""
    if not rows:
        return 0.0
    total = 0
    for row in rows:
        for answer in (row["chosen"], row["rejected"]):
            total += min(max_length, len(tokenizer(row["prompt"] + answer)["input_ids"]) + 1)  # + EOS
    return total / len(rows)


def save_prepared(prepared: PreparedData, folder: Path) -> None:
    """The exact rows trials train and evaluate on, for the record (trials/<name>/data/)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", prepared.train), ("test", prepared.test)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


# The dry run tokenizes at most this many rows (enough for stable percentiles, quick on a laptop).
DRY_RUN_ROWS = 512


def local_tokenizer(spec: Spec):  # type: ignore[no-untyped-def]
    """The model's tokenizer when it is on this machine (builtin, local folder, converted GGUF, or the local Hub
    cache), else None: the dry run never downloads."""
    from transformers import AutoTokenizer

    from sweeper.train.gguf import BUILTIN_SMOLLM2, converted_smollm2
    from sweeper.train.models import resolve_model

    model = spec.model
    name = model.name_or_path
    if name == BUILTIN_SMOLLM2:
        folder = converted_smollm2()
        return None if folder is None else AutoTokenizer.from_pretrained(folder)
    try:
        path = resolve_model(name) if name.startswith("builtin:") or Path(name).expanduser().exists() else name
        return AutoTokenizer.from_pretrained(path, revision=model.revision, trust_remote_code=model.trust_remote_code,
                                             local_files_only=True)  # fmt: skip
    except (OSError, ValueError):
        return None


def dry_run_lengths(spec: Spec, rows: list[dict[str, object]], fmt: str) -> list[str]:
    """The dry run's token-length lines: percentiles of prompt, chosen and rejected, what max_length drops and
    cuts, and what the memory prediction assumes (or why the lengths are unknown)."""
    data = spec.data
    tokenizer = local_tokenizer(spec)
    if tokenizer is None:
        return [f"  token lengths: the tokenizer of {spec.model.name_or_path} is not on this machine (nothing is "
                f"downloaded by a dry run); the memory prediction assumes every sequence at max_length "
                f"{data.max_length}"]  # fmt: skip
    sample = rows if len(rows) <= DRY_RUN_ROWS else random.Random(spec.training.seed).sample(rows, DRY_RUN_ROWS)
    rendered = format_rows(sample, fmt, make_prompt_renderer(tokenizer))
    pct = length_percentiles(tokenizer, rendered)
    parts = "; ".join(f"{k} p50 {v['p50']} / p95 {v['p95']} / max {v['max']}" for k, v in pct.items()
                      if k != "sequence")  # fmt: skip
    cut = length_report(tokenizer, rendered, data.max_length)
    of = f"of {len(sample)} sampled" if len(sample) < len(rows) else f"of {len(rows)}"
    return [
        f"  tokens ({of} rows, chat template applied): {parts}",
        f"  max_length {data.max_length}: {cut['dropped']} {of} pairs dropped (the prompt alone fills it), "
        f"{cut['truncated']} with an answer cut; prompt + longer answer p95 {pct['sequence']['p95']}, max "
        f"{pct['sequence']['max']} tokens",
        f"  the memory prediction assumes every sequence at max_length {data.max_length} (the worst case; the data's "
        f"p95 is {min(pct['sequence']['p95'], data.max_length)})",
    ]
