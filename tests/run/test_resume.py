"""`python -m sweeper resume` after the launch process is SIGKILLed mid-sweep: nothing finished is lost or rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from sweeper.__main__ import main
from sweeper.config.spec import parse_spec
from sweeper.prune.gate import fail_stale_trials
from sweeper.records.store import last_run, load_sweep, read_results, write_json

from ..conftest import ROOT
from ..ray_procs import kill_all, tree, trial_states, wait_for

N_TRIALS, MAX_STEPS, LOGGING_STEPS = 2, 160, 4  # ~13 s a trial (5 s at 60 steps was too short): the kill must land
# while the second runs, and Ray saves the experiment state only every 5 s


def resume_spec(tmp_path: Path) -> Path:
    text = (ROOT / "sweeps" / "smoke.yaml").read_text()
    text = text.replace("name: smoke", "name: resumed")
    text = text.replace("gradient_accumulation_steps: {values: [1, 2]}", "gradient_accumulation_steps: {values: [1]}")
    text = text.replace("logging_steps: 2", f"logging_steps: {LOGGING_STEPS}")
    text = text.replace("max_steps: 24", f"max_steps: {MAX_STEPS}").replace("max_concurrent_trials: 2",
                                                                            "max_concurrent_trials: 1")  # fmt: skip
    # an Optuna study behind the sweep (nop pruner: no trial is stopped), to check it stays consistent
    text = text.replace("model:\n", "early_terminate: {type: optuna, pruner: nop}\nmodel:\n", 1)
    spec = tmp_path / "resumed.yaml"
    spec.write_text(text)
    return spec


def launch_and_kill(spec: Path, env: dict[str, str], ready: str, what: str) -> tuple[dict[str, tuple[str, str]], str]:
    """Launch the sweep, SIGKILL its driver (and its local Ray) once Ray's saved experiment state has a trial in
    state ``ready`` and a running one that has logged steps; return that state and what the driver printed."""
    sweep_dir = spec.parent / "trials" / "resumed"
    driver = subprocess.Popen([sys.executable, "-m", "sweeper", "launch", str(spec)], cwd=spec.parent, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(driver.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    procs = []
    try:

        def state_reached() -> dict[str, tuple[str, str]] | None:
            assert driver.poll() is None, "".join(lines)[-3000:]
            states = trial_states(sweep_dir)
            there = [t for t, (s, _) in states.items() if s == ready]
            running = [d for s, d in states.values() if s == "RUNNING" and read_results(sweep_dir / d / "result.json")]
            return states if there and running else None

        at_kill = wait_for(state_reached, 300, what)
        procs = tree(driver.pid)  # the driver's local Ray (gcs_server, raylet, workers) dies with it or is killed below
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        kill_all([driver, *procs] if procs else tree(driver.pid))
    return at_kill, "".join(lines)


@pytest.mark.extended
@pytest.mark.slow
def test_resume_after_sigkill_keeps_finished_trials_and_completes(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    spec = resume_spec(tmp_path)
    sweep_dir = tmp_path / "trials" / "resumed"
    started = time.monotonic()
    # kill once Ray's saved experiment state has a finished trial and a running one that has logged steps
    at_kill, _ = launch_and_kill(spec, env, "TERMINATED", "a finished trial and a running one in the experiment state")
    killed_at = time.monotonic() - started
    finished = {t: d for t, (s, d) in at_kill.items() if s == "TERMINATED"}
    before = {t: (sweep_dir / d / "result.json").read_bytes() for t, d in finished.items()}
    assert set(at_kill.values()) and len(finished) < N_TRIALS

    proc = subprocess.run([sys.executable, "-m", "sweeper", "resume", "trials/resumed"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    resumed_s = time.monotonic() - started - killed_at
    print(f"launch killed after {killed_at:.0f} s; resume took {resumed_s:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr

    sweep = load_sweep(sweep_dir)
    assert sweep.by_status() == {"completed": N_TRIALS}  # unfinished ones ran again, to the end
    ids = [t.trial_id for t in sweep.trials]
    assert len(ids) == len(set(ids)) == N_TRIALS  # no trial duplicated under a new id
    for trial_id, content in before.items():  # finished trials were kept as they were, not rerun
        assert (sweep_dir / finished[trial_id] / "result.json").read_bytes() == content
    for trial in sweep.trials:  # a rerun trial's curve is its last run's, not two runs end to end
        assert len(trial.curve) == MAX_STEPS // LOGGING_STEPS
        assert trial.final["sweeper/done"] == 1 and trial.adapter is not None
    report = (tmp_path / "reports" / "resumed.md").read_text()
    assert all(f"`{t}`" in report for t in ids)  # the report covers every trial
    assert f"Report: {tmp_path / 'reports' / 'resumed.md'}" in proc.stdout

    # The study: one COMPLETE Optuna trial per Ray trial; those the dead driver left RUNNING are now FAIL
    study = optuna.load_study(study_name="resumed", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == N_TRIALS and "RUNNING" not in states
    stale = [t for t in study.trials if t.state.name == "FAIL"]
    assert stale and all(t.user_attrs.get("sweeper/stale") for t in stale)
    assert {t.user_attrs["ray_trial_id"] for t in study.trials if t.state.name == "COMPLETE"} == set(ids)


def test_resume_of_a_folder_that_is_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ERROR: {tmp_path}: not a sweep folder")


def test_resume_without_ray_state_says_launch_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep_dir = tmp_path / "trials" / "early"
    spec = parse_spec({"name": "early", "model": {"name_or_path": "builtin:tiny-mistral"},
                       "data": {"path": "builtin:synthetic"}})  # fmt: skip
    write_json(sweep_dir / "sweep.json", {"name": "early", "spec": spec.model_dump(mode="json")})
    (sweep_dir / "data").mkdir()
    (sweep_dir / "data" / "train.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    assert main(["resume", str(sweep_dir)]) == 2  # the driver died before Ray's first save
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Ray saved no experiment state there" in line and "launch the sweep again" in line


def test_stale_running_optuna_trials_are_failed_and_finished_ones_kept(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    done = study.ask()
    done.report(0.5, 8)
    study.tell(done, 0.9)  # finished before the driver died: kept
    running = study.ask()  # RUNNING when the driver died
    running.report(0.1, 8)
    assert fail_stale_trials(storage, "s") == 1
    states = {t.number: (t.state.name, t.user_attrs.get("sweeper/stale")) for t in optuna.load_study(
        study_name="s", storage=storage).trials}  # fmt: skip
    assert states[done.number] == ("COMPLETE", None)
    assert states[running.number][0] == "FAIL" and states[running.number][1]
    assert fail_stale_trials(storage, "s") == 0  # idempotent
    assert fail_stale_trials(storage, "no-such-study") == 0


def test_a_rerun_trial_keeps_its_last_run() -> None:
    first = [{"training_iteration": i, "run": 1} for i in (1, 2, 3)]
    second = [{"training_iteration": i, "run": 2} for i in (1, 2, 3, 4)]
    assert last_run(first) == first
    assert last_run(first + second) == second  # Ray's iteration restarts at 1 when a trial reruns from scratch
    assert last_run([]) == []
    assert last_run([{"loss": 1.0}, {"loss": 0.5}]) == [{"loss": 1.0}, {"loss": 0.5}]  # no iteration: one run
    resumed = [{"training_iteration": i, "pid": 7} for i in (4, 5)]  # after `resume` Ray goes on counting
    assert last_run([{**r, "pid": 6} for r in first] + resumed) == resumed  # a new worker process: a new run


@pytest.mark.extended
@pytest.mark.slow
def test_resume_of_a_killed_pausing_sweep_completes_with_each_trial_once(tmp_path: Path) -> None:
    """sweeper's default rule pauses (breadth first): kill the driver while one trial is PAUSED and the other runs,
    then resume. The pause book is not saved: restored trials start from their latest checkpoint, are judged again
    by the gate, and every trial ends once (completed, or pruned with its record)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    spec = resume_spec(tmp_path)
    spec.write_text(spec.read_text().replace("early_terminate: {type: optuna, pruner: nop}",
                                             "early_terminate: {type: optuna}"))  # fmt: skip
    sweep_dir = tmp_path / "trials" / "resumed"
    at_kill, printed = launch_and_kill(spec, env, "PAUSED", "a paused trial and a running one in the experiment state")
    assert "breadth first: waits at the first rung" in printed

    proc = subprocess.run([sys.executable, "-m", "sweeper", "resume", "trials/resumed"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    sweep = load_sweep(sweep_dir)
    ids = [t.trial_id for t in sweep.trials]
    assert sorted(ids) == sorted(at_kill) and len(ids) == len(set(ids)) == N_TRIALS
    assert sum(sweep.by_status().values()) == N_TRIALS and sweep.by_status().get("completed", 0) >= 1
    for trial in sweep.trials:
        steps = [r["sweeper/step"] for r in trial.curve]
        assert len(steps) == len(set(steps)), trial.trial_id  # each logged step once, paused or resumed
        if trial.status == "completed":
            assert trial.final["sweeper/done"] == 1 and trial.final["sweeper/examples_seen"] == 4 * MAX_STEPS
        else:
            assert trial.status == "pruned" and trial.pruned is not None
    assert (tmp_path / "reports" / "resumed.md").is_file()
    study = optuna.load_study(study_name="resumed", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert "RUNNING" not in [t.state.name for t in study.trials]
