"""The live dashboard: ``python -m sweeper dashboard trials/`` serves a read-only Streamlit page on 127.0.0.1.

This module only finds sweeps and becomes Streamlit on ``app.py`` (exec); the page itself lives in
app.py and its charts in charts.py. Light module: imports neither torch, ray nor streamlit.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from sweeper.errors import SweeperError, TrialsError
from sweeper.records.store import SWEEP_FILE

APP = Path(__file__).with_name("app.py")


def find_sweeps(root: Path) -> list[Path]:
    """The sweep folders under root (root itself when it is one), newest sweep.json first."""
    if (root / SWEEP_FILE).is_file():
        return [root]
    if not root.is_dir():
        return []
    found = [d for d in root.iterdir() if (d / SWEEP_FILE).is_file()]
    return sorted(found, key=lambda d: ((d / SWEEP_FILE).stat().st_mtime, d.name), reverse=True)


def streamlit_command(root: Path, host: str, port: int, refresh_s: float) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.address", host,
        "--server.port", str(port),
        "--server.fileWatcherType", "none",  # the page reloads records itself; never watch trials/
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--global.developmentMode", "false",
        "--client.toolbarMode", "viewer",  # no "Deploy" button
        "--", "--trials", str(root.resolve()), "--refresh", f"{refresh_s:g}",
    ]  # fmt: skip


def serve(root: Path, host: str = "127.0.0.1", port: int = 8501, refresh_s: float = 5.0) -> int:
    """Run the dashboard until interrupted; return Streamlit's exit code."""
    if not root.exists():
        raise TrialsError(f"{root}: no such folder: pass the trials folder (default 'trials') or trials/<sweep name>")
    if importlib.util.find_spec("streamlit") is None:
        raise SweeperError("the dashboard needs Streamlit and Plotly: pip install streamlit plotly")
    if not 0 < port < 65536:
        raise SweeperError(f"--port must be between 1 and 65535, but got {port}")
    print(f"Dashboard of {root} ({len(find_sweeps(root))} sweep(s)) on http://{host}:{port} "
          f"(read-only, reloads every {refresh_s:g} s; Ctrl-C stops it)", flush=True)  # fmt: skip
    # Become Streamlit (exec, not a child process): the dashboard's PID is the server's, so stopping that PID
    # (Ctrl-C, a service manager, a test's terminate) stops the server instead of orphaning it.
    command = streamlit_command(root, host, port, refresh_s)
    os.execv(command[0], command)
    return 0  # not reached
