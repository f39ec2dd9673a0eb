"""The package's own exceptions: the CLI turns them into one ``ERROR:`` line and exit code 2."""

from __future__ import annotations


class SweeperError(Exception):
    """A problem the user can fix: the message names the file, the key and the fix."""


class SpecError(SweeperError):
    """A sweep spec that does not validate."""


class DataError(SweeperError):
    """Preference data that cannot be loaded or has no usable rows."""


class TrialsError(SweeperError):
    """A trials/ folder that cannot be read."""


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first non-empty line of an error message, cut to ``limit`` characters ("" when there is none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:limit] if lines else ""


def last_line(text: str | None, limit: int = 200, default: str = "unknown error") -> str:
    """The last non-empty line of a traceback or log (where Python names the error), cut to ``limit``."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else default
