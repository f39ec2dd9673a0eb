"""Where a record lives: a local path or a storage URI Ray supports (``s3://...``), read and written as JSON.

Light module: pyarrow.fs only for a storage URI, as Ray itself uses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweeper.errors import TrialsError
from sweeper.records.store import json_text, read_json, write_json


def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, *parts: str) -> str:
    """location/part/...: a folder, or a URI whose query (``?endpoint_override=...``) stays at the end."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    base, sep, query = location.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


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
        try:
            return read_json(Path(location))
        except TrialsError:  # corrupt: the live progress line does without it (load_sweep says which file)
            return None
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(location)
        with fs.open_input_stream(path) as src:
            return json.loads(src.read().decode())
    except (OSError, ValueError):  # absent (FileNotFoundError), unreachable, or not JSON
        return None
