"""``python -m sweeper resume trials/<name>``: finish a sweep whose driver died (killed, node lost, Ctrl-C).

Ray Tune's own ``Tuner.restore`` does the work: trials that finished are kept and not rerun, unfinished and
errored ones run again (from scratch: their only checkpoint is the final adapter). The trainable is rebuilt
exactly as launch built it, from trials/<name>/sweep.json (the validated spec) and the rows launch saved in
trials/<name>/data/. The sweep's Optuna study stays consistent: trials the dead driver left RUNNING in it are
told FAIL (``sweeper/stale``) and their reruns become new Optuna trials (same params for bayes).

Light at import time, like launch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from sweeper.config.spec import Spec
from sweeper.errors import TrialsError
from sweeper.plan.compile import compile_plan
from sweeper.records.store import SWEEP_FILE, load_sweep, write_json
from sweeper.run.launch import finish_sweep, hardware_text, resolve_gpus, utc_now
from sweeper.run.phases import Phases
from sweeper.tune.cluster import experiment_path


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def resume(sweep_path: str | Path, address: str | None = None, verbose: bool = False,
           out: TextIO | None = None) -> Path:  # fmt: skip
    """Resume the sweep in ``sweep_path``; return the report's path."""
    out = out or sys.stdout
    sweep_dir = Path(sweep_path).resolve()
    before = load_sweep(sweep_dir)  # TrialsError when it is not a sweep folder
    meta = before.meta
    try:
        spec = Spec.model_validate(meta.get("spec"))
    except ValidationError as exc:
        raise TrialsError(
            f"{sweep_dir / SWEEP_FILE}: its spec does not validate with this sweeper "
            f"({exc.error_count()} problem(s)): resume it with the version that launched it"
        ) from None
    train = read_rows(sweep_dir / "data" / "train.jsonl")
    test = read_rows(sweep_dir / "data" / "test.jsonl")
    if not train:
        raise TrialsError(f"{sweep_dir}/data/train.jsonl: missing or empty: launch saved no rows, so the sweep "
                          "cannot be rebuilt; launch it again")  # fmt: skip
    counts = before.by_status()
    print(
        f"Resuming sweep '{spec.name}' from {sweep_dir}: {len(before.trials)} trial(s) on record "
        f"({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none yet'})",
        file=out,
        flush=True,
    )
    from sweeper.tune import raytune, runtime

    raytune.check_resumable(experiment_path(spec, sweep_dir))  # before starting Ray or touching the study
    study = sweep_dir / "optuna.db"
    if study.is_file():
        from sweeper.prune.gate import fail_stale_trials

        n = fail_stale_trials(f"sqlite:///{study}", spec.name)
        if n:
            print(f"  Optuna study: {n} trial(s) left RUNNING by the dead driver marked FAIL; their reruns are "
                  "new Optuna trials", file=out)  # fmt: skip

    started = time.monotonic()
    phases = Phases()
    print(f"Starting Ray ({'cluster ' + address if address else 'local, on 127.0.0.1'}) ...", file=out, flush=True)
    resumes: list[dict[str, Any]] = meta.setdefault("resumed", [])
    resumes.append({"at": utc_now(), "address": address or "local", "trials_before": counts})
    try:
        resources = runtime.init_ray(address, spec.resources.num_cpus, verbose)
        gpus = resolve_gpus(spec, resources)
        print(f"  Ray up in {time.monotonic() - started:.1f} s: {hardware_text(resources)}", file=out, flush=True)
        # Tuner.restore brings back launch's run settings: scheduler, callbacks, FailureConfig (max_failures)
        plan = compile_plan(spec, n_train=len(train))
        result = raytune.resume_sweep(plan, experiment_path(spec, sweep_dir), train, test, gpus)
    finally:
        resumes[-1]["wall_s"] = round(time.monotonic() - started, 1)
        meta["finished_at"] = utc_now()
        write_json(sweep_dir / SWEEP_FILE, meta)
        runtime.shutdown_ray()
    phases.add("shared references", result.get("references_s", 0.0))
    phases.add("trials", result.get("wall_s", 0.0))
    return finish_sweep(spec, sweep_dir, address, out, "resumed and finished", phases)
