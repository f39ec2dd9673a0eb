"""The commands: launch a sweep (or dry-run it), resume one after a crash, evaluate its trials on held-out data.

Each is a module named after the command with an entry function of the same name (``launch.launch``,
``resume.resume``, ``evalrun.evaluate_sweep``); ``sweeper.__main__`` turns the command line into these calls.
"""

from __future__ import annotations

__all__ = ["evalrun", "launch", "resume"]
