"""Light modules import neither torch nor ray (nor TRL/PEFT/transformers): --help and spec errors stay instant."""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import ROOT

LIGHT = ["sweeper", "sweeper.errors", "sweeper.spec", "sweeper.space", "sweeper.data", "sweeper.synthetic",
         "sweeper.store", "sweeper.report", "sweeper.launch", "sweeper.memory", "sweeper.__main__",
         "sweeper.summary", "sweeper.plots", "sweeper.compare", "sweeper.dashboard",
         "sweeper.estimate", "sweeper.preflight", "sweeper.pruning", "sweeper.guard", "sweeper.replay",
         "sweeper.evalstats", "sweeper.mcq", "sweeper.evalrun",
         "sweeper.safeyaml", "sweeper.tracking", "sweeper.cluster", "sweeper.resume", "sweeper.refcache",
         "sweeper.study", "sweeper.progress", "sweeper.specerrors"]  # fmt: skip
# Imported only where they draw: the CLI, launch and the report stay quick to start.
LAZY = ["matplotlib", "pandas", "streamlit", "plotly"]
HEAVY = ["torch", "ray", "transformers", "trl", "peft", "bitsandbytes", "datasets"]


def test_light_modules_import_no_heavy_framework() -> None:
    code = (
        f"import importlib, sys\n"
        f"for m in {LIGHT!r}: importlib.import_module(m)\n"
        f"print(sorted(h for h in {HEAVY + LAZY!r} if h in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_only_raytune_imports_ray_tune() -> None:
    sources = sorted((ROOT / "src" / "sweeper").rglob("*.py"))
    pattern = re.compile(r"from ray import tune|import ray\.tune|from ray\.tune")
    importers = [p.name for p in sources if pattern.search(p.read_text())]
    assert importers == ["raytune.py"]


def test_the_dashboard_page_imports_no_heavy_framework() -> None:
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"sys.argv = ['app', '--trials', {str(ROOT / 'tests' / 'fixtures' / 'trials')!r}]\n"
        f"at = AppTest.from_file({str(ROOT / 'src' / 'sweeper' / 'dashboard' / 'app.py')!r}, default_timeout=60)\n"
        "at.run()\n"
        "assert not at.exception, at.exception\n"
        f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
