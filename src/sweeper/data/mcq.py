"""Multiple-choice sets (PubMedQA, MedQA, MedMCQA, MMLU clinical, your own file) → plain items, validated.

Each row becomes ``{"question": text (passage first, if any), "options": [text, ...], "answer": index}``.
Every problem is one ``DataError`` line naming the file or Hub id, the spec key and the fix, raised here,
before any model is loaded. Light module: ``datasets`` is imported only to read a Hub dataset or Parquet.
"""

from __future__ import annotations

import difflib
from typing import Any

from sweeper.config.spec import MultipleChoiceSet
from sweeper.data.rows import load_rows
from sweeper.errors import DataError, first_line

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def load_set(cfg: MultipleChoiceSet, key: str = "evaluation.multiple_choice[0]") -> list[dict[str, Any]]:
    """The set's rows as items; ``key`` is where the set sits in the spec (for the error lines)."""
    rows = read_rows(cfg)
    source = cfg.label
    if not rows:
        where = f"split {cfg.split!r}" if cfg.subset or not _is_file(cfg.path) else "the file"
        raise DataError(f"{source}: {key}: the set is empty ({where} has no rows): check path, subset and split")
    if cfg.max_rows is not None:
        rows = rows[: cfg.max_rows]
    check_columns(rows[0], cfg, source, key)
    return [item(row, i, cfg, source, key) for i, row in enumerate(rows)]


def read_rows(cfg: MultipleChoiceSet) -> list[dict[str, Any]]:
    if cfg.subset is None or _is_file(cfg.path):
        return [r if isinstance(r, dict) else {"": r} for r in load_rows(cfg.path, cfg.split)]
    import datasets

    try:
        dataset = datasets.load_dataset(cfg.path, cfg.subset, split=cfg.split)
    except Exception as exc:  # datasets raises many types (network, missing config or split)
        first = first_line(exc)
        raise DataError(f"{cfg.label}: could not be loaded as a Hub dataset (subset {cfg.subset!r}, split "
                        f"{cfg.split!r}: {type(exc).__name__}: {first}); check the id, subset and split, or give a "
                        "local .jsonl/.json/.parquet file") from exc  # fmt: skip
    return [dict(row) for row in dataset]


def _is_file(path: str) -> bool:
    return path.lower().endswith((".jsonl", ".json", ".parquet"))


def check_columns(row: dict[str, Any], cfg: MultipleChoiceSet, source: str, key: str) -> None:
    """Every column the mapping names exists (checked on the first row, with a did-you-mean)."""
    named = [("question", cfg.question), ("answer", cfg.answer)]
    if cfg.context:
        named.append(("context", cfg.context))
    if cfg.fixed_options is None:
        columns = cfg.options if isinstance(cfg.options, list) else [cfg.options]
        named += [("options", c) for c in columns if c is not None]
    for field, column in named:
        if column not in row:
            close = difflib.get_close_matches(column, [str(c) for c in row], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"{source}: {key}.{field}: no column {column!r}{hint}; the set has columns "
                            f"{', '.join(map(str, row))}: map {field} to one of them")  # fmt: skip


def item(row: dict[str, Any], i: int, cfg: MultipleChoiceSet, source: str, key: str) -> dict[str, Any]:
    options, letters = row_options(row, cfg, source, key, i)
    question = _text(row.get(cfg.question))
    if not question:
        raise DataError(f"{source}: row {i}: empty question in column {cfg.question!r}: fix or drop the row")
    if cfg.context:
        passage = _text(row.get(cfg.context))
        question = f"{passage}\n\n{question}" if passage else question
    answer = answer_index(row.get(cfg.answer), options, letters)
    if answer is None:
        raise DataError(f"{source}: row {i}: answer {row.get(cfg.answer)!r} (column {cfg.answer!r}) is not among the "
                        f"{len(options)} options: give a 0-based index, a letter {letters[0]}-{letters[-1]} or an "
                        f"option's text ({key}.answer)")  # fmt: skip
    return {"question": question, "options": options, "answer": answer}


def row_options(row: dict[str, Any], cfg: MultipleChoiceSet, source: str, key: str,
                i: int) -> tuple[list[str], list[str]]:  # fmt: skip
    """The row's option texts and their letters (a {letter: text} mapping keeps its own letters)."""
    if cfg.fixed_options is not None:
        options = list(cfg.fixed_options)
    elif isinstance(cfg.options, list):
        options = [_text(row.get(c)) for c in cfg.options]
    else:
        value = row.get(cfg.options)
        if isinstance(value, dict):
            return [_text(v) for v in value.values()], [str(k).strip().upper() for k in value]
        if not isinstance(value, list | tuple):
            raise DataError(f"{source}: row {i}: column {cfg.options!r} holds {type(value).__name__}, not a list of "
                            f"options: give one column per option ({key}.options: [colA, colB, ...])")  # fmt: skip
        options = [_text(v) for v in value]
    if len(options) < 2 or any(not o for o in options):
        raise DataError(f"{source}: row {i}: options {options!r} — need at least 2 non-empty options ({key}.options)")
    return options, list(LETTERS[: len(options)])


def answer_index(value: Any, options: list[str], letters: list[str]) -> int | None:
    """The option's text, a letter (``B``, ``b``, ``(B)``, ``B.``) or a 0-based index → index; None if none fits."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value) if float(value).is_integer() and 0 <= value < len(options) else None
    text = str(value).strip()
    lowered = [o.strip().lower() for o in options]
    if text.lower() in lowered:  # the option's own text first: options "2", "3", "4" with answer "3"
        return lowered.index(text.lower())
    letter = text.strip("().: ").upper()
    if letter in letters:
        return letters.index(letter)
    if text.isdigit():
        return int(text) if int(text) < len(options) else None
    return None


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value).strip()
    if isinstance(value, dict):  # PubMedQA's context: {"contexts": [...], "labels": [...], ...}
        inner = value.get("contexts", list(value.values()))
        return _text(inner)
    return "" if value is None else str(value).strip()
