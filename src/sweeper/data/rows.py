"""Preference rows → ``{"prompt", "chosen", "rejected"}`` strings for TRL's DPOTrainer.

Light module: no torch, transformers, TRL, PEFT or Ray; ``datasets`` is imported only to read Parquet or
a Hub dataset.
The tokenizer is duck-typed (``apply_chat_template``, ``bos_token``, ``bos_token_id``, ``__call__``).

Why the prompt is rendered here rather than left to TRL: chat templates differ in whether they accept a system
role (Mistral-7B-Instruct-v0.2's raises), and TRL tokenizes a string prompt with ``tokenizer(text=prompt)``,
which adds BOS on tokenizers that do so while the template has already written ``{{ bos_token }}``.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sweeper.data.formats import MESSAGE_FORMATS, Skip, detect_format, normalise, rename_columns
from sweeper.data.shipped import SHIPPED_DATA, shipped_path
from sweeper.data.synthetic import BUILTIN_DATA, synthetic_preference_rows
from sweeper.errors import DataError

FORMATS = ("auto", "orca", "prompt_chosen_rejected", *MESSAGE_FORMATS)

# Required text fields per format; orca's optional "system" is handled apart.
_REQUIRED = {
    "orca": ("question", "chosen", "rejected"),
    "prompt_chosen_rejected": ("prompt", "chosen", "rejected"),
}

_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
# One JSONL row longer than this is junk or the wrong file (a 4k-token DPO row is ~50k characters).
MAX_ROW_CHARS = 1 << 20

# The assistant turn that lets a template without a system role still carry the system prompt.
SYSTEM_ACK = "Please ask me your question"

_PROBE_SYSTEM = "sweeper-probe-system-7d1f"

T = TypeVar("T")


class ChatTokenizer(Protocol):
    """What the renderer needs from a Hugging Face tokenizer."""

    bos_token: Any
    bos_token_id: Any
    chat_template: Any

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...

    def __call__(self, text: str, /) -> Any: ...


@dataclass(frozen=True)
class RowReport:
    """How many rows a source had, how many survived, and why the others were skipped."""

    n_total: int
    n_valid: int
    skipped: dict[str, int]  # reason -> count
    format: str = ""  # the format the rows were read as (detected when data.format is auto)

    def summary(self) -> str:
        """One line, e.g. ``284 rows: 280 valid, skipped 3 empty 'chosen', 1 chosen == rejected``."""
        line = f"{self.n_total} {'row' if self.n_total == 1 else 'rows'}: {self.n_valid} valid"
        if not self.skipped:
            return line
        ordered = sorted(self.skipped.items(), key=lambda item: (-item[1], item[0]))
        return line + ", skipped " + ", ".join(f"{count} {reason}" for reason, count in ordered)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; use one of: {', '.join(FORMATS)}")


def _row_problem(row: object, fmt: str) -> str | None:
    """The reason to skip ``row``, or None when it is usable."""
    if not isinstance(row, Mapping):
        return "not an object"
    for field in _REQUIRED[fmt]:
        value = row.get(field)
        if value is None:
            return f"missing {field!r}"
        if not isinstance(value, str):
            return f"non-text {field!r}"
        if not value.strip():
            return f"empty {field!r}"
    system = row.get("system")
    if fmt == "orca" and system is not None and not isinstance(system, str):
        return "non-text 'system'"
    if row["chosen"].strip() == row["rejected"].strip():
        return "chosen == rejected"
    return None


def validate_rows(rows: Iterable[Mapping[str, Any]], fmt: str,
                  columns: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], RowReport]:  # fmt: skip
    """Keep the usable rows of ``fmt`` (``auto``: detected from the columns); skip the others, counted by reason.

    ``columns`` (``data.columns``) renames the file's columns onto the format's first. Reasons: missing / empty
    (or whitespace-only) / non-text field, chosen == rejected, not an object, and the message formats' own
    (sweeper.data.formats). Clean orca rows have system ("" when absent), question, chosen, rejected;
    prompt_chosen_rejected rows have prompt, chosen, rejected; the message formats give messages, chosen,
    rejected. Texts are kept as given (not stripped).
    """
    rows = [rename_columns(row, columns or {}) for row in rows]
    if fmt == "auto":
        detected = detect_format(rows)
        if detected is None and any(isinstance(r, Mapping) for r in rows):
            raise DataError(_undetected(rows))
        if detected is None:  # no object row at all: counted as such, and refused as "no usable rows"
            return [], RowReport(len(rows), 0, dict(Counter("not an object" for _ in rows)), "auto")
        fmt = detected
    _check_format(fmt)
    clean: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for row in rows:
        if fmt in MESSAGE_FORMATS:
            try:
                clean.append(normalise(row, fmt))
            except Skip as why:
                skipped[str(why)] += 1
            continue
        problem = _row_problem(row, fmt)
        if problem is not None:
            skipped[problem] += 1
            continue
        fields = ("system", *_REQUIRED[fmt]) if fmt == "orca" else _REQUIRED[fmt]
        clean.append({field: row.get(field) or "" for field in fields})
    return clean, RowReport(n_total=len(rows), n_valid=len(clean), skipped=dict(skipped), format=fmt)


def _undetected(rows: Sequence[Any]) -> str:
    first = next((r for r in rows if isinstance(r, Mapping)), None)
    if first is None:
        found = "no object rows" if rows else "no rows"
    else:
        found = "columns " + ", ".join(sorted(map(str, first)))[:200]
    return (
        f"the data format could not be detected ({found}); preference rows need 'chosen' and 'rejected' "
        "(with 'prompt', 'question', 'instruction' or 'conversations'), or 'chosen_messages' and "
        "'rejected_messages': set data.format, or map your columns with data.columns (README: Data formats)"
    )


def require_valid_rows(report: RowReport, source: str, fmt: str) -> None:
    """Raise DataError naming ``source`` when no row survived validation."""
    if report.n_valid > 0:
        return
    fmt = report.format or fmt
    needs = ", ".join(_REQUIRED[fmt]) if fmt in _REQUIRED else "its columns (README: Data formats)"
    raise DataError(
        f"{source}: no usable preference rows ({report.summary()}); "
        f"format {fmt!r} needs non-empty text fields {needs} with chosen != rejected: "
        "fix the rows or the format"
    )


def template_accepts_system(tokenizer: ChatTokenizer) -> bool:
    """Whether the chat template renders a system turn (Mistral-7B-Instruct-v0.2's raises on one)."""
    from jinja2 import TemplateError

    messages = [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": "Hi"}]
    try:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        return False
    # A template that silently drops the system turn does not accept it either.
    return _PROBE_SYSTEM in str(rendered)


def tokenizer_adds_bos(tokenizer: ChatTokenizer) -> bool:
    """Whether ``tokenizer(text)`` puts BOS in front by itself (Mistral's and Llama's do, Qwen's does not)."""
    bos_id = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return bos_id is not None and len(ids) > 0 and ids[0] == bos_id


def _messages(system: str, question: str, accepts_system: bool) -> list[dict[str, str]]:
    if not system:
        return [{"role": "user", "content": question}]
    if accepts_system:
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return [
        {"role": "user", "content": system},
        {"role": "assistant", "content": SYSTEM_ACK},
        {"role": "user", "content": question},
    ]


class PromptRenderer:
    """Prompts through the tokenizer's chat template, ready for TRL: ``render(system, question)`` for flat rows,
    ``render.messages(turns)`` for the message formats.

    The generation prompt is appended. A template without a system role gets the system text as a first user
    turn answered by the assistant with ``SYSTEM_ACK``. When the tokenizer adds BOS itself, one leading BOS
    string written by the template is removed, so TRL's ``tokenizer(text=prompt)`` yields a single BOS.
    """

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise DataError(
                "the model's tokenizer has no chat template, so prompts cannot be rendered; "
                "use an instruct/chat model or set chat_template in its tokenizer_config"
            )
        self.tokenizer = tokenizer
        self.accepts_system = template_accepts_system(tokenizer)
        self.bos = tokenizer.bos_token if tokenizer_adds_bos(tokenizer) else None

    def __call__(self, system: str, question: str) -> str:
        return self._render(_messages(system, question, self.accepts_system))

    def messages(self, turns: Sequence[Mapping[str, str]]) -> str:
        """A prompt of several turns; a leading system turn follows the same rule as ``system`` above."""
        turns = [dict(t) for t in turns]
        if turns and turns[0]["role"] == "system":
            system, rest = turns[0]["content"], turns[1:]
            if not system.strip():
                turns = rest
            elif not self.accepts_system:
                turns = [{"role": "user", "content": system}, {"role": "assistant", "content": SYSTEM_ACK}, *rest]
        return self._render(turns)

    def _render(self, turns: list[dict[str, str]]) -> str:
        prompt = str(self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
        if self.bos and prompt.startswith(self.bos):
            prompt = prompt[len(self.bos) :]
        return prompt


def make_prompt_renderer(tokenizer: ChatTokenizer) -> PromptRenderer:
    """The tokenizer's :class:`PromptRenderer` (DataError when it has no chat template)."""
    return PromptRenderer(tokenizer)


def format_rows(rows: Iterable[Mapping[str, Any]], fmt: str, render: Callable[[str, str], str]) -> list[dict[str, str]]:
    """Validated rows → ``{"prompt", "chosen", "rejected"}``; the answers stay plain (TRL appends EOS).

    The message formats need a :class:`PromptRenderer` (its ``messages``)."""
    _check_format(fmt)
    if fmt == "orca":
        return [
            {
                "prompt": render(row["system"], row["question"]),
                "chosen": row["chosen"],
                "rejected": row["rejected"],
            }
            for row in rows
        ]
    if fmt in MESSAGE_FORMATS:
        turns = getattr(render, "messages", None)
        if turns is None:
            raise TypeError(f"format {fmt!r} renders message turns: pass a PromptRenderer")
        return [
            {"prompt": turns(row["messages"]), "chosen": row["chosen"], "rejected": row["rejected"]} for row in rows
        ]
    return [{"prompt": render("", row["prompt"]), "chosen": row["chosen"], "rejected": row["rejected"]} for row in rows]


def _reason(exc: BaseException) -> str:
    """The innermost explicit cause's first line, e.g. ``ArrowInvalid: JSON parse error ... in row 1``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def is_local_source(source: str) -> bool:
    """A builtin set or a path on this machine (a file, or anything with a file suffix or a path separator),
    as opposed to a Hub dataset id such as ``Intel/orca_dpo_pairs``."""
    if source.startswith("builtin:"):
        return True
    path = Path(source).expanduser()
    return path.exists() or path.suffix.lower() in _LOCAL_SUFFIXES or source.startswith((".", "/", "~"))


def load_rows(source: str, split: str = "train", name: str | None = None) -> list[dict[str, Any]]:
    """Rows from a local .jsonl/.json/.parquet file, a builtin set (synthetic, shipped orca rows), or a Hub id.

    JSON is read with the standard library, not ``datasets``: in a column that mixes types (the very rows
    validation must catch), datasets 5.2 decodes strings that happen to be JSON, so "4" became 4.
    """
    if source == BUILTIN_DATA:
        return [dict(row) for row in synthetic_preference_rows()]
    if source in SHIPPED_DATA:
        return _read_json(shipped_path(source), source)
    if source.startswith("builtin:"):
        known = ", ".join([BUILTIN_DATA, *SHIPPED_DATA])
        raise DataError(f"{source}: no such builtin data set; use one of {known}, a local file or a Hub dataset id")
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DataError(f"{source}: is a directory, not a data file; give one .jsonl/.json/.parquet file")
    if suffix in _LOCAL_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{source}: no such file; check the path (relative paths start at {Path.cwd()})")
        return _read_parquet(path, source) if suffix == ".parquet" else _read_json(path, source)
    if path.is_file():
        raise DataError(f"{source}: unsupported file type {path.suffix!r}; convert it to .jsonl, .json or .parquet")
    import datasets

    try:
        dataset = datasets.load_dataset(source, name, split=split)
    except Exception as exc:  # datasets raises many types (network, auth, missing split): report them alike
        raise DataError(
            f"{source}: could not be loaded as a Hub dataset, {f'config {name!r}, ' if name else ''}split {split!r} "
            f"({_reason(exc)}); check the id, data.name and data.split, or give a local .jsonl/.json/.parquet path"
        ) from exc
    return [dict(row) for row in dataset]


def _read_json(path: Path, source: str) -> list[Any]:
    """JSON Lines, or for .json also one JSON array of rows (as datasets' json builder accepts)."""
    try:
        raw = path.read_bytes()
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DataError(f"{source}: the file is UTF-16 text: re-export it as UTF-8 JSON Lines")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: could not be read ({_reason(exc)}); check it is a UTF-8 text file") from exc
    if "\x00" in text:
        raise DataError(f"{source}: holds NUL bytes (binary data, not JSON text): check the path")
    if path.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None  # not one document: read it as JSON Lines below
        except RecursionError:
            raise DataError(f"{source}: JSON nested too deeply to be preference rows: check the file") from None
        if isinstance(document, list):
            return document
        if isinstance(document, dict) and "\n" in text.strip():
            raise DataError(
                f"{source}: holds one JSON object, not rows; write a JSON array of row objects or JSON Lines"
            )
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_ROW_CHARS:
            raise DataError(f"{source}: line {number} has {len(line)} characters, over the {MAX_ROW_CHARS} limit "
                            "for one preference row: is it the right file?")  # fmt: skip
        try:
            rows.append(json.loads(line))
        except RecursionError:
            raise DataError(f"{source}: line {number} is JSON nested too deeply to be a preference row") from None
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{source}: line {number} is not valid JSON ({exc}); fix it or re-export the file as JSON Lines"
            ) from exc
    return rows


def _read_parquet(path: Path, source: str) -> list[dict[str, Any]]:
    if path.stat().st_size == 0:
        raise DataError(f"{source}: is empty (0 bytes), not a Parquet file; check the path or re-export it")
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(max(0, path.stat().st_size - 4))
        tail = fh.read(4)
    if head != b"PAR1" or tail != b"PAR1":  # checked here: datasets would also log its own error line
        raise DataError(f"{source}: could not be read as Parquet (no PAR1 magic bytes at its start and end); "
                        "fix or re-export the file")  # fmt: skip
    import datasets

    try:
        dataset = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as exc:  # pyarrow and datasets raise many types for a bad file
        raise DataError(f"{source}: could not be read as Parquet ({_reason(exc)}); fix or re-export the file") from exc
    return [dict(row) for row in dataset]


def load_valid_rows(source: str, fmt: str, split: str = "train", columns: Mapping[str, str] | None = None,
                    name: str | None = None) -> tuple[list[dict[str, Any]], RowReport]:  # fmt: skip
    """``load_rows`` then ``validate_rows``; DataError naming ``source`` when no row is usable."""
    _check_format(fmt)
    try:
        clean, report = validate_rows(load_rows(source, split, name), fmt, columns)
    except DataError as exc:
        if str(exc).startswith(source):
            raise
        raise DataError(f"{source}: {exc}") from None
    require_valid_rows(report, source, fmt)
    return clean, report


def split_rows(rows: Sequence[T], test_size: float | int, seed: int) -> tuple[list[T], list[T]]:
    """(train, test) after a shuffle fixed by ``seed``.

    ``test_size`` < 1 is a fraction (rounded up, like datasets), >= 1 a count; 0 gives no test rows.
    The same rows, size and seed always give the same split.
    """
    if test_size < 0 or (test_size >= 1 and test_size != int(test_size)):
        raise ValueError(f"test_size must be 0, a fraction in (0, 1) or a whole count, but got {test_size=}.")
    n_rows = len(rows)
    n_test = math.ceil(test_size * n_rows) if test_size < 1 else int(test_size)
    if n_test > 0 and n_test >= n_rows:
        raise DataError(
            f"test_size={test_size} takes {n_test} of {n_rows} rows and leaves none for training; "
            "lower test_size or add rows"
        )
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    test = [rows[i] for i in order[:n_test]]
    train = [rows[i] for i in order[n_test:]]
    return train, test
