"""Writing files so that a crash never leaves half of one: a file through a temporary beside it, a folder by rename.

Light module: the standard library only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from sweeper.errors import SweeperError


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary beside ``path``, then rename it over ``path`` (readers see old or new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """A UTF-8 text file, written atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def publish_folder(staging: Path, target: Path, replace: bool = False) -> bool:
    """Move a finished ``staging`` folder to ``target`` in one rename; False when another process got there first.

    ``replace=True`` first removes an existing ``target`` (a corrupt earlier copy). The staging folder is gone
    afterwards either way.
    """
    try:
        if replace and target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
        return True
    except OSError:
        if not target.exists():
            raise
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_folder_once(target: Path, build: Callable[[Path], object], complete: Callable[[Path], bool]) -> Path:
    """``target``, built by ``build(staging)`` on first use and renamed into place (a cache of built models).

    A complete ``target`` is returned at once; a concurrent process never sees half a folder, and when another
    process finished first its copy is kept.
    """
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not publish_folder(staging, target) and not complete(target):  # another process won the rename
        raise SweeperError(f"{target} exists but is incomplete: delete it and run again")
    return target
