"""The layer rules, enforced by import-linter (pyproject.toml [tool.importlinter]), and the light entry points.

Layers import only layers below them; only sweeper.train imports torch/transformers/TRL/PEFT/bitsandbytes and
only sweeper.tune imports ray. At run time, --help, a spec error and --dry-run load none of them.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

HEAVY = ["torch", "ray", "transformers", "trl", "peft", "bitsandbytes", "datasets"]
# Imported only where they draw: the CLI, launch and the report stay quick to start.
LAZY = ["matplotlib", "pandas", "streamlit", "plotly"]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_the_contracts_hold() -> None:
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


def lint_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """The contracts on a copy of the tree with ``line`` appended to ``module`` (a path under src/sweeper)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src" / "sweeper", tmp_path / "src" / "sweeper",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    target = tmp_path / "src" / "sweeper" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return lint_imports(tmp_path)


def test_a_torch_import_in_plan_breaks_the_contract(tmp_path: Path) -> None:
    proc = lint_with(tmp_path, "plan/space.py", "import torch  # noqa: E402")
    assert proc.returncode != 0
    assert "sweeper.plan is not allowed to import torch" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    # records is the lowest layer: importing the report from it would close a circle (report -> records)
    proc = lint_with(tmp_path, "records/store.py", "from sweeper.report import markdown  # noqa: E402,F401")
    assert proc.returncode != 0
    assert "sweeper.records.store -> sweeper.report.markdown" in proc.stdout


def loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted(h for h in {HEAVY + LAZY!r} if h in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def test_every_light_layer_imports_no_heavy_or_drawing_library() -> None:
    layers = ["config", "plan", "data", "prune", "records", "report", "tune", "run", "train.memory", "train.tiny"]
    assert loaded_after("; ".join(f"import sweeper.{m}" for m in layers) + "; import sweeper.__main__") == []


def test_help_and_spec_errors_load_no_heavy_framework_and_the_dry_run_no_trainer(tmp_path: Path) -> None:
    """--help and a bad spec stay instant; the dry run tokenizes the data (transformers, and torch through it)
    but never loads Ray, TRL, PEFT or bitsandbytes."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethod: grid\nparameters: {learning_rat: {value: 1.0e-5}}\n")
    code = (
        "import contextlib, io\n"
        "from sweeper.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"    assert main(['launch', {str(bad)!r}]) == 2\n"
    )
    assert [m for m in loaded_after(code) if m in HEAVY] == []
    dry = code + "    assert main(['launch', 'sweeps/smoke.yaml', '--dry-run']) == 0\n"
    assert [m for m in loaded_after(dry) if m in HEAVY and m not in ("torch", "transformers")] == []


def test_the_dashboard_page_imports_no_heavy_framework() -> None:
    app = ROOT / "src" / "sweeper" / "report" / "dashboard" / "app.py"
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"sys.argv = ['app', '--trials', {str(ROOT / 'tests' / 'fixtures' / 'trials')!r}]\n"
        f"at = AppTest.from_file({str(app)!r}, default_timeout=60)\n"
        "at.run()\n"
        "assert not at.exception, at.exception\n"
    )
    assert [m for m in loaded_after(code) if m in HEAVY] == []
