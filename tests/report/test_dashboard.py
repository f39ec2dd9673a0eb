"""The dashboard: the page without a browser (Streamlit's AppTest), then in headless Chromium on a recorded sweep."""

from __future__ import annotations

import json
import os
import re
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
from sweeper.report.dashboard.analysis import (
    compare_figure,
    importance_figure,
    parallel_figure,
    slices_figure,
    timeline_figure,
)
from sweeper.report.dashboard.charts import compute_figure, curve_figure, memory_figure
from sweeper.report.dashboard.frames import details_frame, summary_frame
from sweeper.report.dashboard.views import VIEW_KEY, VIEWS
from sweeper.report.sensitivity import sensitivity
from sweeper.report.summary import compute

from ..conftest import FIXTURES, ROOT
from .test_report import build_demo

RECORDED = FIXTURES / "trials"
BENCHMARKS = ROOT / "benchmarks" / "recorded"  # real recorded sweeps: cpu_grid24 has 24 trials, enough to rank
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


def test_page_shows_table_views_and_report(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(RECORDED, monkeypatch)
    at.run()
    assert not at.exception
    assert at.sidebar.radio[0].options == [p.name for p in find_sweeps(RECORDED)]
    at.sidebar.radio[0].set_value("smoke").run()
    assert at.dataframe[0].value.shape[0] == 4
    assert [t.label for t in at.tabs] == list(VIEWS)
    tabs, charts = {}, {}
    for view in VIEWS:  # open each tab in turn: only the open one runs
        at.session_state[VIEW_KEY] = view
        at.run()
        assert not at.exception
        tabs[view] = next(t for t in at.tabs if t.label == view)
        charts[view] = len(tabs[view].get("plotly_chart"))
        assert len(at.get("plotly_chart")) == charts[view]  # the hidden views drew nothing
    # margins (accuracies are flat: said in words), slices, parallel coordinates, timeline, memory and compute,
    # the two smoke sweeps compared; the report is text
    assert charts == {"Curves": 1, "Sensitivity": 1, "Parallel coordinates": 1, "Timeline": 1,
                      "Memory & compute": 2, "Compare sweeps": 1, "Report": 0}  # fmt: skip
    assert "rewards/accuracies` is 1 in every trial" in tabs["Curves"].info[0].value
    assert "fewer than 8" in tabs["Sensitivity"].info[0].value  # too few trials to rank parameters: said so
    assert "Spent: 0.004394 CPU-hours" in tabs["Memory & compute"].markdown[0].value
    assert "| quantization | 4bit | 8bit |" in tabs["Compare sweeps"].markdown[0].value
    report = tabs["Report"].markdown[0].value
    assert "# Sweep report: smoke" in report and "## Trials" not in report  # its table is the page's, above
    best = next(m.value for m in at.markdown if m.value.startswith("**Best so far:**"))
    assert "{" not in best and "learning_rate=0.003" in best  # values, not a raw Python dict
    assert "random model" in at.caption[0].value  # the builtin tiny model says what it is


def test_trials_table_keeps_to_the_reports_summary_columns(tmp_path: Path) -> None:
    sweep = load_sweep(build_demo(tmp_path / "trials" / "demo"))
    table = summary_frame(sweep, ["completed", "pruned", "oom", "error"])
    assert list(table.columns) == ["trial", "learning_rate", "gradient_accumulation_steps", "status", "margins final",
                                   "guard", "GPU-h", "GPU peak GiB"]  # fmt: skip
    assert len(table.columns) <= 10  # fits a 1280 px window; the rest is under "All columns"
    assert table["trial"].tolist()[1] == "aaaaa_00001 ★"  # the winner
    assert table["guard"].tolist()[:2] == ["ok", "flagged"]
    assert table["guard"].isna().tolist()[2]  # the failed trial has no verdict: a blank cell, not "flagged"
    assert table["GPU peak GiB"].tolist()[5] == 25.4
    assert table["GPU peak GiB"].isna().tolist()[4]  # out of memory at every attempt: no peak
    cpu = summary_frame(load_sweep(RECORDED / "smoke"), ["completed"])
    assert cpu.columns[-1] == "RSS peak MiB" and cpu[cpu.columns[-1]].min() > 600  # RSS, never beside GPU memory
    assert "stop_reason" in details_frame(sweep, ["pruned"]).columns


def test_status_filter_keeps_matching_trials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(build_demo(tmp_path / "trials" / "demo"), monkeypatch)
    at.run()
    assert at.dataframe[0].value.shape[0] == 6
    at.sidebar.multiselect[0].set_value(["pruned", "oom"]).run()
    assert sorted(at.dataframe[0].value["status"]) == ["oom", "pruned"]


def test_curves_mark_where_trials_stopped(tmp_path: Path) -> None:
    sweep = load_sweep(build_demo(tmp_path / "trials" / "demo"))
    fig = curve_figure(sweep, sweep.trials, "rewards/margins")
    stops = {trace.name: trace.marker.symbol for trace in fig.data if trace.mode == "markers"}
    assert stops == {"aaaaa_00003 pruned": "x", "aaaaa_00002 error": "square"}
    pruned = next(trace for trace in fig.data if trace.name == "aaaaa_00003 pruned")
    assert (pruned.x[0], pruned.y[0]) == (16.0, 0.02)  # at the examples seen where it was pruned
    memory = memory_figure(sweep, sweep.trials)
    assert [trace.name for trace in memory.data] == ["measured peak", "predicted", "out of memory"]


def test_curves_are_faceted_with_the_winner_bold_and_stopped_trials_faded(tmp_path: Path) -> None:
    sweep = load_sweep(build_demo(tmp_path / "trials" / "demo"))
    fig = curve_figure(sweep, sweep.trials, "rewards/margins")
    # one panel per accumulation (the colour is the learning rate): 1 and 2
    assert [a.text for a in fig.layout.annotations if "=" in a.text] == ["gradient_accumulation_steps=1",
                                                                         "gradient_accumulation_steps=2"]  # fmt: skip
    lines = {t.name: t for t in fig.data if t.mode == "lines" and t.x[0] is not None}
    winner = lines["00001 lr=0.003 ga=2"]
    assert winner.line.width == 4 and winner.line.color == "black"
    assert any(a.text == "<b>★ winner</b>" for a in fig.layout.annotations)
    assert lines["00003 lr=0.0001 ga=1 (pruned)"].opacity < 1  # faded where it stopped
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["learning_rate=1e-05", "learning_rate=0.0001", "learning_rate=0.003", "★ winner"]
    assert fig.layout.legend.y < 0  # under the panels, never over a curve


def test_curves_mark_where_a_trial_was_paused(tmp_path: Path) -> None:
    sweep = load_sweep(build_demo(tmp_path / "trials" / "demo"))
    trial = next(t for t in sweep.trials if t.trial_id == "aaaaa_00005")  # paused at 20 examples, resumed, finished
    trial.events = [{"event": "paused", "examples_seen": 20, "step": 2}, {"event": "resumed", "examples_seen": 20}]
    fig = curve_figure(sweep, sweep.trials, "rewards/margins")
    paused = next(t for t in fig.data if t.name == "aaaaa_00005 paused")
    assert paused.marker.symbol == "diamond-open" and (paused.x, paused.y) == ((16.0,), (0.0,))  # the point before
    assert next(t for t in fig.data if t.name.startswith("00005")).opacity == 1.0  # it completed: not faded


def test_compute_bar_spent_and_saved_at_the_price(tmp_path: Path) -> None:
    sweep = load_sweep(build_demo(tmp_path / "trials" / "demo"))
    fig = compute_figure(compute(sweep))
    names = [t.name for t in fig.data]
    assert names == ["trials: 1.08 GPU-h, $2.17", "saved by pruning 1 trial(s): 0.0833 GPU-h, $0.17"]
    assert fig.data[1].marker.pattern.shape == "/"  # saved: hatched
    assert fig.layout.xaxis.title.text == "compute in GPU-hours at $2 per GPU-hour"


def test_sweep_views_draw_the_records(tmp_path: Path) -> None:
    grid = load_sweep(BENCHMARKS / "cpu_grid24")
    s = sensitivity(grid, "rewards/margins", "maximize")
    assert s is not None and not s.reason
    bars = importance_figure(s)
    assert {t.name for t in bars.data} <= {"PED-ANOVA", "fANOVA"} and len(bars.data[0].y) == 3
    parallel = parallel_figure(grid)
    bold = [t for t in parallel.data if t.line.width == 5]
    assert len(parallel.data) == 24 and [t.name for t in bold] == ["f85af_00001"]  # one line per trial, winner bold
    slices = slices_figure(grid)
    assert sum(len(t.x) for t in slices.data if t.name != "★ winner") == 24 * 3  # every trial in each panel
    timeline = timeline_figure(grid)
    assert sum(len(t.x) for t in timeline.data) == 24
    compared = compare_figure([grid, load_sweep(BENCHMARKS / "cpu_grid12")])
    assert [t.name.split(":")[0] for t in compared.data] == ["cpu_grid24", "cpu_grid12"]


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


def copy_sweeps(trials: Path, sources: list[Path]) -> None:
    """Copies of recorded sweeps, the first one's sweep.json the newest: the page opens on it."""
    for age, source in enumerate(sources):
        shutil.copytree(source, trials / source.name, ignore=shutil.ignore_patterns("trials.csv", "trials.parquet"))
        stamp = time.time() - 60 * age
        os.utime(trials / source.name / "sweep.json", (stamp, stamp))


@pytest.fixture
def dashboard(tmp_path: Path):  # type: ignore[no-untyped-def]
    """`python -m sweeper dashboard` on a copy of a recorded sweep; yields (url, trials folder, pid)."""
    yield from serve_copies(tmp_path, [RECORDED / "smoke"])


@pytest.fixture
def grid_dashboard(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The dashboard on the recorded 24-trial CPU grid (shown first), the 12-trial grid, the smoke sweep and the
    hand-made GPU sweep with a pruned, an out-of-memory and a failed trial (listed last)."""
    demo = build_demo(tmp_path / "trials" / "demo")
    stamp = time.time() - 3600
    os.utime(demo / "sweep.json", (stamp, stamp))
    yield from serve_copies(tmp_path, [BENCHMARKS / "cpu_grid24", BENCHMARKS / "cpu_grid12", RECORDED / "smoke"])


def serve_copies(tmp_path: Path, sources: list[Path]):  # type: ignore[no-untyped-def]
    """`python -m sweeper dashboard` on copies of recorded sweeps; yields (url, trials folder, pid), then stops it."""
    trials = tmp_path / "trials"
    copy_sweeps(trials, sources)
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
            # the open Curves tab: margins (accuracies are flat, said in words); the other views are checked by
            # test_every_view_renders_with_data_in_a_1280_px_window
            assert [c["traces"] >= 4 for c in charts_with_data(page, 1)] == [True]  # the 4 trials' curves drawn
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # a sweep still running: a fifth trial appears and the page shows it without a reload
            sweep = trials / "smoke"
            after_page = snapshot(trials)
            add_trial(sweep, next(sweep.glob("*_00000_*")), "2e698_00004")
            page.wait_for_function(f"document.querySelectorAll('{rows}').length == 6", timeout=30_000)
            new_curve = "(document.querySelector('.js-plotly-plot')?.data || []).some(t => /lr=0.001/.test(t.name))"
            page.wait_for_function(new_curve, timeout=30_000)  # and its curve, in the chart already open
        finally:
            browser.close()
    assert after_page == before  # read-only: loading the page changed nothing under trials/
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    if os.environ.get("SWEEPER_SCREENSHOT"):
        shutil.copy(tmp_path / "dashboard.png", os.environ["SWEEPER_SCREENSHOT"])


# what each view of the 24-trial grid must show: (charts, points in its first chart at least, text on the tab)
GRID_VIEWS = {
    "Curves": (1, 24 * 10, "winner bold"),  # margins of 24 trials (accuracies are flat: said in words)
    "Sensitivity": (2, 3, "most sensitive to"),  # importances of 3 parameters; slices of the 24 trials
    "Parallel coordinates": (1, 24 * 4, "swept values and final"),  # 3 swept values and the final metric per trial
    "Timeline": (1, 24, "One bar per trial"),
    "Memory & compute": (2, 24, "CPU-hours"),
    "Compare sweeps": (1, 2, "What differs in the specs"),
    "Report": (0, 0, "Sweep report: cpu_grid24"),
}
# every chart in the open tab: its traces, points drawn, annotations and where it ends on the page
CHARTS_JS = """() => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')].map(p => ({
    traces: p.data.length,
    points: p.data.reduce((n, t) => n + [...(t.x || [])].filter(v => v !== null && v !== undefined).length, 0),
    annotations: ((p.layout || {}).annotations || []).map(a => a.text),
    right: p.getBoundingClientRect().right,
}))"""
FITS_JS = """() => {
    const main = document.querySelector('[data-testid=stMain]');
    const grids = [...document.querySelectorAll('[data-testid=stDataFrame] .dvn-scroller')];
    const edge = main.getBoundingClientRect().right;
    const wide = [...main.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > edge + 1);
    return {page: document.documentElement.scrollWidth, main: main.scrollWidth - main.clientWidth,
            grids: grids.map(g => g.scrollWidth - g.clientWidth), height: main.scrollHeight,
            wide: wide.slice(0, 3).map(e => e.tagName + ' ' + (e.innerText || '').slice(0, 80))};
}"""
WIDTH = 1280


def charts_with_data(page, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """Wait until the open tab holds n charts, each with points drawn; return CHARTS_JS's view of them."""
    page.wait_for_function(f"({CHARTS_JS})().filter(c => c.points > 0).length >= {n}", timeout=60_000)
    return list(page.evaluate(CHARTS_JS))


def open_view(page, view: str, text: str, n_charts: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """Click a view's tab; once its text shows and the run that draws it is over (nothing left of the previous
    tab), its n charts with their data."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    tab = page.get_by_role("tab", name=view)
    for _ in range(3):  # a click that lands while the page reloads its records can be lost: click again
        tab.click()
        try:
            page.locator("[role=tabpanel]").get_by_text(text).first.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        pytest.fail(f"the {view} tab never showed {text!r}")
    drawn = f"({CHARTS_JS})().filter(c => c.points > 0).length == {n_charts}"
    page.wait_for_function(f"!document.querySelector('[data-stale=true]') && {drawn}", timeout=60_000)
    return list(page.evaluate(CHARTS_JS))


def screenshot(page, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The whole page at the test's width: Streamlit scrolls inside its main block, so the window grows to fit;
    taken between two reloads (Streamlit fades what it is redrawing)."""
    height = min(int(page.evaluate(FITS_JS)["height"]), 8000)
    page.set_viewport_size({"width": WIDTH, "height": max(height, 900)})
    page.wait_for_timeout(500)  # Plotly redraws at the new size
    charts = "[...document.querySelectorAll('[role=tabpanel] [data-testid=stPlotlyChart]')]"
    drawn = f"{charts}.every(c => c.querySelector('.main-svg'))"
    page.wait_for_function(f"!document.querySelector('[data-stale=true]') && {drawn}", timeout=30_000)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": 900})


@pytest.mark.slow
def test_every_view_renders_with_data_in_a_1280_px_window(grid_dashboard, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, trials, _ = grid_dashboard
    assert list(GRID_VIEWS) == list(VIEWS)  # every view is visited
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            started = time.monotonic()
            page.goto(url)
            charts_with_data(page, 1)
            first_render = time.monotonic() - started
            print(f"first chart with data {first_render:.1f} s after opening the page")
            assert first_render < 120  # a sanity bound, not a benchmark (2 busy cores)
            header = page.inner_text('[data-testid="stMain"]').split("Trials (")[0]
            assert "Sweep cpu_grid24" in header  # the newest sweep is shown first
            assert "random model" in header  # the builtin tiny model says what it is
            assert "Best so far: ★ f85af_00001" in header  # the winner, named once above the views
            for i, (view, (n_charts, n_points, text)) in enumerate(GRID_VIEWS.items()):
                charts = open_view(page, view, text, n_charts)
                assert len(charts) == n_charts, view
                if charts:
                    assert charts[0]["points"] >= n_points, (view, charts[0])
                    assert max(c["right"] for c in charts) <= WIDTH, view  # no chart runs off the window
                fits = page.evaluate(FITS_JS)
                assert fits["page"] <= WIDTH and fits["main"] <= 0, (view, fits["wide"])  # no horizontal scrolling
                assert fits["grids"] and max(fits["grids"]) <= 0, (view, fits)  # nor inside the trials table
                shown = page.inner_text('[data-testid="stMain"]')
                raw = re.search(r"\{'|\[['\d]|\b(None|True|False|nan)\b", shown)
                assert raw is None, (view, raw)  # values in words and numbers, no Python structures
                if view in ("Curves", "Parallel coordinates"):
                    assert any("winner" in a for a in charts[0]["annotations"]), view  # the winner labelled
                screenshot(page, shots / f"{i + 1}-{view.lower().replace(' & ', '-').replace(' ', '-')}.png")
            # a GPU sweep whose trials stopped early: marks where they stopped, and a table that still fits
            page.get_by_test_id("stRadioGroup").get_by_text("demo", exact=True).click()
            page.get_by_role("tab", name="Curves").click()
            page.get_by_text("Trials (6 of 6)").wait_for(timeout=60_000)
            stops = "(document.querySelector('.js-plotly-plot')?.data || []).filter(t => t.mode == 'markers').length"
            page.wait_for_function(f"{stops} == 2", timeout=60_000)  # × pruned, ■ failed
            fits = page.evaluate(FITS_JS)
            assert fits["page"] <= WIDTH and fits["main"] <= 0 and max(fits["grids"]) <= 0, fits
            screenshot(page, shots / "8-stopped-trials.png")
        finally:
            browser.close()
    pngs = sorted(shots.glob("*.png"))
    assert len(pngs) == len(GRID_VIEWS) + 1 and all(p.stat().st_size > 20_000 for p in pngs)
    if os.environ.get("SWEEPER_SCREENSHOTS"):
        target = Path(os.environ["SWEEPER_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for png in pngs:
            shutil.copy(png, target / png.name)


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


def test_a_flagged_leader_is_named_with_the_guards_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(build_demo(tmp_path / "trials" / "demo"), monkeypatch)  # its leader aaaaa_00001 is flagged
    at.run()
    assert not at.exception
    best = next(m.value for m in at.markdown if m.value.startswith("**Best so far:**"))
    assert "`aaaaa_00001`" in best and "⚠ margin-hacking guard: flagged" in best


def test_an_unflagged_leader_carries_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    at = app_test(RECORDED, monkeypatch)
    at.run()
    best = next(m.value for m in at.markdown if m.value.startswith("**Best so far:**"))
    assert "guard" not in best
