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
