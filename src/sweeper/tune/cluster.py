"""Running on a Ray cluster: retries, where Ray keeps the trials, bringing them back to trials/<name>.

Light module: imports neither torch nor ray (pyarrow.fs only for a storage URI, as Ray itself uses it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.records.storage import is_uri, join

CLUSTER_MAX_FAILURES = 2  # a lost node costs a trial a rerun, twice at most


def max_failures(spec: Any, address: str | None) -> int:
    """resources.max_failures, else 2 on a cluster (nodes get lost) and 0 locally (an error is a bug)."""
    if spec.resources.max_failures is not None:
        return int(spec.resources.max_failures)
    return CLUSTER_MAX_FAILURES if address else 0


def experiment_path(spec: Any, sweep_dir: Path) -> str:
    """Where Ray keeps this sweep's experiment (what Tuner.restore reads): output.storage/<name> or the folder."""
    storage = spec.output.storage
    if not storage:
        return str(sweep_dir.resolve())
    if is_uri(storage):
        return join(storage, spec.name)
    return str(Path(storage).resolve() / spec.name)


def copy_from_storage(spec: Any, sweep_dir: Path) -> int:
    """Copy the trial folders (and Ray's experiment state) from output.storage into trials/<name>.

    Files already present with the same size are skipped; returns how many files were copied.
    """
    source = experiment_path(spec, sweep_dir)
    if source == str(sweep_dir.resolve()):
        return 0
    if not is_uri(source):
        if not Path(source).is_dir():
            return 0
        n = 0
        for path in Path(source).rglob("*"):
            target = sweep_dir / path.relative_to(source)
            if path.is_file() and not (target.is_file() and target.stat().st_size == path.stat().st_size):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                n += 1
        return n
    import pyarrow.fs

    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(source)
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    except Exception as exc:  # pyarrow raises OSError / ArrowInvalid subclasses per backend
        raise SweeperError(
            f"output.storage: cannot read {source} ({type(exc).__name__}: {exc}); the trials stay "
            "there: check credentials and run `python -m sweeper report` after copying"
        ) from exc
    n = 0
    for info in infos:
        if info.type != pyarrow.fs.FileType.File:
            continue
        target = sweep_dir / Path(info.path).relative_to(root)
        if target.is_file() and target.stat().st_size == info.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        n += 1
    return n
