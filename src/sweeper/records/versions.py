"""The installed versions of the packages a sweep's numbers depend on. Light module: importlib.metadata only."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata


def package_versions(names: Iterable[str], absent: str | None = None) -> dict[str, str]:
    """``{name: version}``; a package that is not installed maps to ``absent``, or is left out when that is None."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if absent is not None:
                found[name] = absent
    return found
