"""Running on a Ray cluster: retries, where Ray keeps the trials, bringing them back to trials/<name>.

Light module: imports neither torch nor ray (pyarrow.fs only for a storage URI, as Ray itself uses it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.store import json_text, read_json, write_json

CLUSTER_MAX_FAILURES = 2  # a lost node costs a trial a rerun, twice at most


def max_failures(spec: Any, address: str | None) -> int:
    """resources.max_failures, else 2 on a cluster (nodes get lost) and 0 locally (an error is a bug)."""
    if spec.resources.max_failures is not None:
        return int(spec.resources.max_failures)
    return CLUSTER_MAX_FAILURES if address else 0


def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, *parts: str) -> str:
    """location/part/...: a folder, or a URI whose query (``?endpoint_override=...``) stays at the end."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    base, sep, query = location.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def experiment_path(spec: Any, sweep_dir: Path) -> str:
    """Where Ray keeps this sweep's experiment (what Tuner.restore reads): output.storage/<name> or the folder."""
    storage = spec.output.storage
    if not storage:
        return str(sweep_dir.resolve())
    if is_uri(storage):
        return join(storage, spec.name)
    return str(Path(storage).resolve() / spec.name)


def trial_record(experiment: str, trial_dir: str | Path, name: str) -> str:
    """Where sweeper's own file of a trial (attempts.json, pruned.json) goes: beside Ray's files of that trial
    in the experiment's storage. ``trial_dir`` is any path ending in the trial's folder name (Ray's staging
    folder on the node, or the trial's path in storage)."""
    return join(experiment, Path(trial_dir).name, name)


def write_record(location: str, data: Any) -> None:
    """JSON to a local path (atomically) or to a URI Ray supports (through pyarrow.fs, as Ray writes there).

    A trial on a worker node writes to storage itself: Ray uploads only its own files from that node."""
    if not is_uri(location):
        write_json(Path(location), data)
        return
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(json_text(data).encode())


def read_record(location: str) -> Any:
    """A record written by write_record, or None when absent or unreadable."""
    if not is_uri(location):
        return read_json(Path(location))
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        with fs.open_input_stream(path) as src:
            return json.loads(src.read().decode())
    except (OSError, ValueError):  # absent (FileNotFoundError), unreachable, or not JSON
        return None


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
