"""Real preference rows shipped inside the package: ``builtin:orca_dpo_pairs`` (284 rows of Intel/orca_dpo_pairs).

Light module: the standard library only. The file and its licence lie in ``sweeper/data/shipped/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["BUILTIN_ORCA", "SHIPPED_DATA", "shipped_path"]

BUILTIN_ORCA = "builtin:orca_dpo_pairs"
# builtin name -> (file in sweeper/data/shipped, its row count)
SHIPPED_DATA = {BUILTIN_ORCA: ("orca_dpo_pairs_sample284.jsonl", 284)}


def shipped_path(name: str) -> Path:
    """The file behind a shipped builtin data name (a KeyError for any other name)."""
    filename, _ = SHIPPED_DATA[name]
    return Path(str(resources.files("sweeper.data").joinpath("shipped", filename)))
