"""Markdown tables, the one way the report, the comparison and the held-out section draw them. Light module."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def row(cells: Sequence[str]) -> str:
    """One table row: ``| a | b |``."""
    return "| " + " | ".join(cells) + " |"


def table(head: Sequence[str], rows: Iterable[Sequence[str]] = ()) -> list[str]:
    """Header, separator and rows of a markdown table, one string per line."""
    return [row(head), "|" + "---|" * len(head), *(row(r) for r in rows)]
