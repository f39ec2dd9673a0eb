"""The dashboard: the page without a browser (Streamlit's AppTest), then in headless Chromium on a recorded sweep."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from sweeper.__main__ import build_parser, main
from sweeper.records.store import load_sweep
from sweeper.report.dashboard import APP, find_sweeps, streamlit_command
from sweeper.report.dashboard.charts import curve_figure, memory_figure

from ..conftest import FIXTURES, ROOT
from .test_report import build_demo

RECORDED = FIXTURES / "trials"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def app_test(trials: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app", "--trials", str(trials), "--refresh", "0"])  # read by app.py on run
    return AppTest.from_file(str(APP), default_timeout=60)


def test_dashboard_binds_loopback_by_default() -> None:
    args = build_parser().parse_args(["dashboard"])
    assert (args.host, args.port, args.trials) == ("127.0.0.1", 8501, Path("trials"))
    command = streamlit_command(Path("trials"), args.host, args.port, args.refresh)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.fileWatcherType") + 1] == "none"


def test_dashboard_on_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith(f"ERROR: {tmp_path / 'nope'}: no such folder")


def test_find_sweeps_lists_sweep_folders_or_takes_one(tmp_path: Path) -> None:
    assert {p.name for p in find_sweeps(RECORDED)} == {"smoke", "smoke-8bit"}
    assert find_sweeps(RECORDED / "smoke") == [RECORDED / "smoke"]
    assert find_sweeps(tmp_path) == []


def test_page_shows_table_charts_and_report(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(RECORDED, monkeypatch)
    at.run()
    assert not at.exception
    assert at.sidebar.radio[0].options == [p.name for p in find_sweeps(RECORDED)]
    at.sidebar.radio[0].set_value("smoke").run()
    assert at.dataframe[0].value.shape[0] == 4
    assert len(at.get("plotly_chart")) == 3  # margins, accuracies, memory
    assert "# Sweep report: smoke" in at.expander[0].markdown[0].value
    best = next(m.value for m in at.markdown if m.value.startswith("**Best so far:**"))
    assert "{" not in best and "learning_rate=0.003" in best  # values, not a raw Python dict
    assert "random weights" in at.caption[0].value  # the builtin tiny model says what it is


def test_status_filter_keeps_matching_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(build_demo(tmp_path / "trials" / "demo"), monkeypatch)
    at.run()
    assert at.dataframe[0].value.shape[0] == 6
    at.sidebar.multiselect[0].set_value(["pruned", "oom"]).run()
    assert sorted(at.dataframe[0].value["status"]) == ["oom", "pruned"]


def test_curves_mark_where_trials_stopped(tmp_path: Path) -> None:
    sweep = load_sweep(build_demo(tmp_path / "trials" / "demo"))
    fig = curve_figure(sweep.trials, "rewards/margins")
    stops = {trace.name: trace.marker.symbol for trace in fig.data if trace.mode == "markers"}
    assert stops == {"aaaaa_00003 pruned": "x", "aaaaa_00002 error": "square"}
    pruned = next(trace for trace in fig.data if trace.name == "aaaaa_00003 pruned")
    assert (pruned.x[0], pruned.y[0]) == (16.0, 0.02)  # at the examples seen where it was pruned
    memory = memory_figure(sweep, sweep.trials)
    assert [trace.name for trace in memory.data] == ["measured peak", "predicted", "out of memory"]


# ---------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def listening_addresses(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


@pytest.fixture
def dashboard(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`python -m sweeper dashboard` on a copy of a recorded sweep; yields (url, trials folder, pid)."""
    trials = tmp_path / "trials"
    shutil.copytree(RECORDED / "smoke", trials / "smoke")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HOME": str(tmp_path)}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "dashboard", str(trials), "--port", str(port),
                             "--refresh", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() - started < 60, "the dashboard did not answer /_stcore/health within 60 s"
            time.sleep(0.2)
        print(f"dashboard healthy after {time.monotonic() - started:.1f} s")
        yield url, trials, proc.pid
    finally:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()
        assert not alive, "stopping the dashboard's PID left its server running"


def add_trial(sweep_dir: Path, source: Path, trial_id: str) -> None:
    """What a running sweep does: a new trial folder appears."""
    target = sweep_dir / f"{trial_id}_lr=0.001_ga=1"
    target.mkdir()
    params = {"learning_rate": 1e-3, "gradient_accumulation_steps": 1}
    (target / "params.json").write_text(json.dumps({"params": params}))
    rows = (source / "result.json").read_text().splitlines()[:3]  # a few steps in, not done yet
    (target / "result.json").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_dashboard_in_a_real_browser(dashboard, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, trials, pid = dashboard
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    assert listening_addresses(pid) == {"127.0.0.1"}  # loopback only unless --host says otherwise
    before = snapshot(trials)
    rows = '[data-testid="stDataFrame"] [role="row"]'
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            started = time.monotonic()
            page.goto(url)
            page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=60_000)
            page.wait_for_function(f"document.querySelectorAll('{rows}').length == 5", timeout=30_000)
            print(f"page with table and charts rendered in {time.monotonic() - started:.1f} s")
            assert page.locator('[data-testid="stPlotlyChart"]').count() == 3
            assert page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace').count() > 0  # curves drawn
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # a sweep still running: a fifth trial appears and the page shows it without a reload
            sweep = trials / "smoke"
            after_page = snapshot(trials)
            add_trial(sweep, next(sweep.glob("*_00000_*")), "2e698_00004")
            page.wait_for_function(f"document.querySelectorAll('{rows}').length == 6", timeout=30_000)
        finally:
            browser.close()
    assert after_page == before  # read-only: loading the page changed nothing under trials/
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    if os.environ.get("SWEEPER_SCREENSHOT"):
        shutil.copy(tmp_path / "dashboard.png", os.environ["SWEEPER_SCREENSHOT"])


def test_page_of_a_sweep_that_just_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = tmp_path / "trials" / "fresh"
    sweep.mkdir(parents=True)
    meta = json.loads((RECORDED / "smoke" / "sweep.json").read_text())
    (sweep / "sweep.json").write_text(json.dumps({**meta, "finished_at": None}))  # no trial folder yet
    at = app_test(tmp_path / "trials", monkeypatch)
    at.run()
    assert not at.exception
    assert at.dataframe[0].value.shape[0] == 0
    assert "running" in at.caption[0].value
