"""The Ray Tune adapter: the one module that imports ``ray.tune``.

Ray's API churns between releases (``ray.train.report`` breaks inside Tune 2.60, ``ray.train.RunConfig``
is rejected by the Tuner); that churn is absorbed here. See ../shared/RECIPES.md.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from sweeper.space import label, swept_names, trial_settings
from sweeper.spec import Parameter, Spec


def loopback_env() -> None:
    """Environment that keeps a local Ray on 127.0.0.1 (our machines allow servers on loopback only)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def init_ray(address: str | None, num_cpus: int | None, verbose: bool) -> dict[str, float]:
    """Start a local Ray (bound to loopback) or connect to a cluster; return its resources."""
    loopback_env()
    import ray

    if address:
        ray.init(address=address, log_to_driver=verbose)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose)
    return dict(ray.cluster_resources())


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _trainable(config: dict[str, Any], *, spec: Spec, train_rows: list[dict], eval_rows: list[dict]) -> None:
    from ray import tune

    from sweeper.store import ATTEMPTS_FILE
    from sweeper.trial import oom_injection, run_with_oom_retries

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if metrics.get("sweeper/oom"):  # no attempt fitted: Tune still wants the metric in the last result
            metrics = {spec.metric.name: float("nan"), **metrics}
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    settings = trial_settings(spec, config["params"])
    run_with_oom_retries(
        settings, train_rows, eval_rows, report, cpus=spec.resources.cpus_per_trial, oom=spec.resources.oom,
        attempts_path=Path(tune.get_context().get_trial_dir()) / ATTEMPTS_FILE,
        callbacks_for=oom_injection(os.environ),  # None unless a test sets SWEEPER_TEST_OOM_AT_STEP
    )  # fmt: skip


def _search_space(spec: Spec) -> dict[str, Any]:
    from ray import tune

    def dist(p: Parameter, name: str) -> Any:
        from sweeper.spec import parameter_values

        kind = p.kind
        if kind in ("values", "categorical"):
            return tune.choice(parameter_values(name, p))
        if kind == "value":
            return parameter_values(name, p)[0]
        lo, hi = float(p.min or 0), float(p.max or 0)
        if kind == "log_uniform_values":
            return tune.loguniform(lo, hi)
        if kind == "int_uniform":
            return tune.randint(int(lo), int(hi) + 1)
        if kind == "q_uniform":
            return tune.quniform(lo, hi, p.q or 1.0)
        return tune.uniform(lo, hi)

    return {name: dist(p, name) for name, p in spec.parameters.items()}


def _dirname(trial: Any, names: list[str]) -> str:
    text = label(trial.config.get("params", {}), names).replace(" ", "_")
    return f"{trial.trial_id}_{re.sub(r'[^A-Za-z0-9_.=-]', '', text)}"[:120]


class ProgressPrinter:
    """One line per trial result, start, end and error (Ray's own table is off)."""

    def __init__(self, names: list[str], n_planned: int, metric: str, stream: Any = None) -> None:
        self.names = names
        self.n_planned = n_planned
        self.metric = metric
        self.index: dict[str, int] = {}
        self.stream = stream or sys.stdout

    def _tag(self, trial: Any) -> str:
        n = self.index.setdefault(trial.trial_id, len(self.index) + 1)
        return f"[{n}/{self.n_planned} {label(trial.config.get('params', {}), self.names)}]"

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, trial: Any) -> None:
        self.say(f"{self._tag(trial)} started ({trial.trial_id})")

    def result(self, trial: Any, result: dict[str, Any]) -> None:
        if result.get("sweeper/oom"):
            self.say(f"{self._tag(trial)} out of memory at every per-device batch tried "
                     f"({result.get('sweeper/attempt')} attempt(s)): status oom")  # fmt: skip
            return
        if result.get("sweeper/done"):
            value = result.get(self.metric)
            self.say(f"{self._tag(trial)} completed: {self.metric} {_num(value)} after "
                     f"{result.get('sweeper/step')} steps in {_num(result.get('sweeper/elapsed_s'))} s")  # fmt: skip
            return
        parts = [f"step {result.get('sweeper/step')}", f"{result.get('sweeper/examples_seen')} ex"]
        if (result.get("sweeper/attempt") or 1) > 1:  # a retry after running out of memory
            batch = result.get("sweeper/per_device_train_batch_size")
            parts.insert(0, f"attempt {result['sweeper/attempt']} bs {batch}")
        for key, short in (("rewards/margins", "margins"), ("rewards/accuracies", "acc"), ("loss", "loss"),
                           ("eval_rewards/margins", "eval margins"), ("eval_loss", "eval loss")):  # fmt: skip
            if key in result:
                parts.append(f"{short} {_num(result[key])}")
        parts.append(f"{_num(result.get('sweeper/elapsed_s'))} s")
        self.say(f"{self._tag(trial)} " + " · ".join(parts))

    def error(self, trial: Any) -> None:
        where = Path(trial.local_path or trial.path or "") / "error.txt"
        self.say(f"{self._tag(trial)} ERROR: the trial failed; traceback in {where}")


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _callback(printer: ProgressPrinter) -> Any:
    from ray import tune

    class _Progress(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            printer.start(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            printer.result(trial, result)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            printer.error(trial)

    return _Progress()


def run_sweep(
    spec: Spec,
    configs: list[dict[str, Any]],
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
    trials_root: Path,
    gpus_per_trial: float,
) -> dict[str, Any]:
    """Run every trial through a Tuner; return counts by Ray's trial status."""
    from ray import tune

    names = swept_names(spec)
    mode = "max" if spec.metric.goal == "maximize" else "min"
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, spec=spec, train_rows=train_rows, eval_rows=eval_rows),
        {"cpu": spec.resources.cpus_per_trial, "gpu": gpus_per_trial},
    )
    search_alg = None
    if spec.method == "bayes":
        from ray.tune.search.optuna import OptunaSearch

        param_space: dict[str, Any] = {"params": _search_space(spec)}
        search_alg = OptunaSearch(metric=spec.metric.name, mode=mode, seed=spec.seed)
        num_samples = int(spec.run_cap or 1)
    else:
        param_space = {"params": tune.grid_search(configs)}
        num_samples = 1
    n_planned = num_samples if spec.method == "bayes" else len(configs)
    printer = ProgressPrinter(names, n_planned, spec.metric.name)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric.name,
            mode=mode,
            num_samples=num_samples,
            search_alg=search_alg,
            max_concurrent_trials=spec.resources.max_concurrent_trials,
            reuse_actors=False,  # every trial loads its model in a fresh process: no state leaks
            trial_dirname_creator=lambda t: _dirname(t, names),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(trials_root.resolve()),
            verbose=0,
            callbacks=[_callback(printer)],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    started = time.monotonic()
    grid = tuner.fit()
    counts: dict[str, int] = {}
    for result in grid:
        status = "error" if result.error else "completed"
        counts[status] = counts.get(status, 0) + 1
    counts["wall_s"] = int(time.monotonic() - started)
    return counts
