"""Preference rows: read from a file, the hub or the builtin synthetic set, validated, split and rendered.

Light layer (no torch, no ray); the chat-template rendering that needs a tokenizer is in ``sweeper.train.prepare``.
"""

from __future__ import annotations

from sweeper.data.mcq import answer_index, load_set
from sweeper.data.rows import (
    RowReport,
    format_rows,
    load_rows,
    load_valid_rows,
    make_prompt_renderer,
    split_rows,
    template_accepts_system,
    validate_rows,
)
from sweeper.data.shipped import BUILTIN_ORCA, SHIPPED_DATA, shipped_path
from sweeper.data.synthetic import BUILTIN_DATA, corpus_texts, synthetic_preference_rows

__all__ = [
    "BUILTIN_DATA",
    "BUILTIN_ORCA",
    "SHIPPED_DATA",
    "RowReport",
    "answer_index",
    "corpus_texts",
    "format_rows",
    "load_rows",
    "load_set",
    "load_valid_rows",
    "make_prompt_renderer",
    "shipped_path",
    "split_rows",
    "synthetic_preference_rows",
    "template_accepts_system",
    "validate_rows",
]
