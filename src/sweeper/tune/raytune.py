"""The Ray Tune adapter: the one module that imports ``ray.tune``.

Ray's API churns between releases (``ray.train.report`` breaks inside Tune 2.60, ``ray.train.RunConfig``
is rejected by the Tuner); that churn is absorbed here. See ../shared/RECIPES.md.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from sweeper.config.spec import Spec
from sweeper.plan.space import corner_configs, label, swept_names, trial_settings
from sweeper.prune.study import build_gate, fixed_params, forget_gate, optuna_distributions
from sweeper.tune.progress import ProgressPrinter
from sweeper.tune.runtime import keep_secrets_out_of_runtime_env


def _trainable(config: dict[str, Any], *, spec: Spec, train_rows: list[dict], eval_rows: list[dict],
               experiment: str, refs: dict[str, Any] | None = None) -> None:  # fmt: skip
    import ray
    from ray import tune

    from sweeper.records.refcache import signature
    from sweeper.records.storage import trial_record
    from sweeper.records.store import ATTEMPTS_FILE
    from sweeper.train.trial import oom_injection, run_with_oom_retries

    node = {"sweeper/node_id": ray.get_runtime_context().get_node_id(),
            "sweeper/node_ip": ray.util.get_node_ip_address()}  # fmt: skip

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if metrics.get("sweeper/oom"):  # no attempt fitted: Tune still wants the metric in the last result
            metrics = {spec.metric.name: float("nan"), **metrics}
        metrics = {**metrics, **node}  # where it ran: a retried trial shows the node it moved to
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    settings = trial_settings(spec, config["params"])
    run_with_oom_retries(
        settings, train_rows, eval_rows, report, cpus=spec.resources.cpus_per_trial, oom=spec.resources.oom,
        attempts_path=trial_record(experiment, tune.get_context().get_trial_dir(), ATTEMPTS_FILE),
        callbacks_for=oom_injection(os.environ),  # None unless a test sets SWEEPER_TEST_OOM_AT_STEP
        ref_logps=(refs or {}).get(signature(settings)),  # model.reference: shared (sweeper.tune.refshare)
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Pruning: an Optuna study behind a Ray scheduler (and, for bayes, a Ray searcher on the same study)
# ---------------------------------------------------------------------------------------------


def _pruning_scheduler(gate: dict[str, Any], spec: Spec, n_train: int, step_key: str, pruner_name: str,
                       experiment: str) -> Any:  # fmt: skip
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from sweeper.plan.space import planned_examples
    from sweeper.prune.guard import is_flagged
    from sweeper.records.storage import trial_record, write_record
    from sweeper.records.store import PRUNED_FILE

    metric = spec.metric.name
    guard_mode = spec.early_terminate.guard if spec.early_terminate else "off"

    class OptunaPruningScheduler(FIFOScheduler):
        """Asks the sweep's PruningGate after every result; STOP writes <trial>/pruned.json (in storage)."""

        def __init__(self) -> None:
            super().__init__()
            self.last_step: dict[str, int] = {}
            self.planned: dict[str, int] = {}

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            if trial.status in ("TERMINATED", "ERROR"):  # restored by `sweeper resume`: already told to the study
                return
            g = build_gate(gate)
            if trial.trial_id in g.curves:
                return
            params = trial.config.get("params", {})
            if spec.method == "bayes":  # a bayes trial rerun after `sweeper resume`: same params, known to TPE
                distributions = optuna_distributions(spec)
                g.study.enqueue_trial({n: v for n, v in params.items() if n in distributions})
                g.add(trial.trial_id, optuna_trial=g.study.ask(distributions))
            else:
                g.add(trial.trial_id, params)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get("sweeper/done"):
                return TrialScheduler.CONTINUE
            step = result.get(step_key, self.last_step.get(trial.trial_id))
            if step is None:
                return TrialScheduler.CONTINUE
            self.last_step[trial.trial_id] = int(step)
            verdict = result.get("sweeper/guard")
            value = result.get(metric)
            if trial.trial_id not in self.planned:  # examples the trial sees if it runs to the end
                training = trial_settings(spec, trial.config.get("params", {}))["training"]
                self.planned[trial.trial_id] = planned_examples(training, n_train)
            planned = self.planned[trial.trial_id]
            at_end = int(result.get("sweeper/examples_seen") or 0) >= planned  # its last log: let it finish
            g = build_gate(gate)
            if guard_mode == "prune" and is_flagged(verdict) and not at_end:
                reason = f"margin-hacking guard: {verdict}"
            elif isinstance(value, int | float) and g.report(trial.trial_id, int(step), float(value)):
                if at_end:
                    return TrialScheduler.CONTINUE
                reason = f"{pruner_name} pruner on {metric}"
            else:
                return TrialScheduler.CONTINUE
            g.prune(trial.trial_id)
            record = pruned_record(result, planned, value, reason)
            write_record(trial_record(experiment, trial.path, PRUNED_FILE), record)
            return TrialScheduler.STOP

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            build_gate(gate).complete(trial.trial_id, (result or {}).get(metric))

        def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
            build_gate(gate).fail(trial.trial_id)

    return OptunaPruningScheduler()


def pruned_record(result: dict[str, Any], planned: int, value: Any, reason: str) -> dict[str, Any]:
    """Where a trial was stopped and the compute it did not spend (at its own rate so far)."""
    seen = int(result.get("sweeper/examples_seen") or 0)
    elapsed = float(result.get("sweeper/elapsed_s") or 0.0)
    saved = max(0, planned - seen)
    return {
        "step": result.get("sweeper/step"),
        "examples_seen": seen,
        "tokens_seen": result.get("sweeper/tokens_seen"),
        "value": value,
        "reason": reason,
        "planned_examples": planned,
        "saved_examples": saved,
        "saved_s": round(saved * elapsed / seen, 1) if seen else None,
    }


# Proposals in a row that may be ruled out (infeasible) before the searcher says the space is exhausted.
MAX_REDRAWS = 200


def _study_searcher(gate: dict[str, Any], spec: Spec) -> Any:
    import optuna
    from ray.tune.search import Searcher

    from sweeper.plan import preflight

    mode = "max" if spec.metric.goal == "maximize" else "min"
    distributions = optuna_distributions(spec)
    fixed = {n: v for n, v in fixed_params(spec).items() if n not in distributions}

    class StudySearcher(Searcher):
        """Optuna TPE proposals from the sweep's study: the sampler and the pruner see the same trials.

        A proposal ruled out before it runs (out of memory at every batch earlier in this sweep or in an
        earlier launch: ``gate["infeasible"]``; predicted above the GPU with ``preflight: skip``) is told to the
        study as PRUNED with no value (TPE counts it among the worst, so it steers away) and redrawn."""

        def __init__(self) -> None:
            super().__init__(metric=spec.metric.name, mode=mode)
            self.infeasible: list[dict[str, Any]] = list(gate.get("infeasible") or [])
            self.params: dict[str, dict[str, Any]] = {}
            self.said: set[tuple[str, Any]] = set()

        def reason(self, params: dict[str, Any]) -> str | None:
            row = preflight.ruled_out_by(params, self.infeasible)
            if row is not None:
                return f"ran out of memory at every batch before ({row.get('trial_id') or 'an earlier launch'})"
            if spec.resources.preflight == "skip":
                planned = preflight.plan(spec, [params])[0]
                if planned.over:
                    return (f"predicted {planned.predicted_gb:.1f} GB > resources.gpu_memory_gb "
                            f"{spec.resources.gpu_memory_gb:g} (preflight: skip)")  # fmt: skip
            return None

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            g = build_gate(gate)
            for _ in range(MAX_REDRAWS):
                optuna_trial = g.study.ask(distributions)
                params = {**fixed, **optuna_trial.params}
                why = self.reason(params)
                if why is None:
                    g.add(trial_id, optuna_trial=optuna_trial)
                    self.params[trial_id] = params
                    return {"params": params}
                optuna_trial.set_user_attr("sweeper_infeasible", why)
                g.study.tell(optuna_trial, state=optuna.trial.TrialState.PRUNED)
                said = (why, params.get("per_device_train_batch_size"))
                if said not in self.said:  # once per reason and batch, not for every redraw
                    self.said.add(said)
                    print(f"bayes: proposal {params} not run: {why} (TPE is told; later ones like it are "
                          "redrawn silently)", flush=True)  # fmt: skip
            print(f"bayes: {MAX_REDRAWS} proposals in a row were ruled out: the search space has no feasible "
                  "config left; the sweep ends", flush=True)  # fmt: skip
            return Searcher.FINISHED

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            # the scheduler tells the study (completed, pruned or failed); an OOM at every batch rules out its
            # memory settings for the proposals to come
            if (result or {}).get("sweeper/oom") and trial_id in self.params:
                params = self.params[trial_id]
                smallest = (
                    1
                    if spec.resources.oom == "retry_halved"
                    else params.get("per_device_train_batch_size", spec.training.per_device_train_batch_size)
                )
                self.infeasible.append({"params": params, "reason": "oom", "trial_id": trial_id,
                                        "batches_tried": [smallest]})  # fmt: skip

        def save(self, checkpoint_path: str) -> None:
            Path(checkpoint_path).write_text("the state is the Optuna study in optuna.db\n")

        def restore(self, checkpoint_path: str) -> None:
            pass  # `sweeper resume`: the study is reloaded from optuna.db

    return StudySearcher()


def _dirname(trial: Any, names: list[str]) -> str:
    text = label(trial.config.get("params", {}), names).replace(" ", "_")
    return f"{trial.trial_id}--{re.sub(r'[^A-Za-z0-9_.=-]', '', text)}"[:120].rstrip("-")


def _callback(printer: ProgressPrinter, trackers: Any = None) -> Any:
    """Progress lines, and the sweep's trackers (sweeper.records.tracking: they run here, in the driver)."""
    from ray import tune

    class _Progress(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            printer.start(trial)
            if trackers is not None:
                trackers.start_trial(trial.trial_id, trial.config.get("params", {}))

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            printer.result(trial, result)
            if trackers is not None:
                trackers.log(trial.trial_id, result)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            printer.error(trial)
            if trackers is not None:
                trackers.end_trial(trial.trial_id, "error")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            printer.pruned(trial)
            if trackers is not None:
                trackers.end_trial(trial.trial_id, "completed" if "sweeper/done" in (trial.last_result or {})
                                   else "stopped")  # fmt: skip

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            if trackers is not None:
                trackers.close()

    return _Progress()


def wrapped_trainable(spec: Spec, train_rows: list[dict], eval_rows: list[dict], gpus_per_trial: float,
                      experiment: str, refs: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """The trainable with the sweep's spec, rows, storage (and shared reference log-probs) bound: launch and
    resume build it the same way."""
    from ray import tune

    keep_secrets_out_of_runtime_env()

    return tune.with_resources(
        tune.with_parameters(
            _trainable, spec=spec, train_rows=train_rows, eval_rows=eval_rows, experiment=experiment, refs=refs
        ),
        {"cpu": spec.resources.cpus_per_trial, "gpu": gpus_per_trial},
    )


def resume_sweep(spec: Spec, experiment: str, train_rows: list[dict[str, str]], eval_rows: list[dict[str, str]],
                 gpus_per_trial: float) -> dict[str, Any]:  # fmt: skip
    """Tuner.restore of a killed sweep: finished trials are kept, unfinished and errored ones run again.

    Scheduler, searcher, callbacks and run settings come back from Ray's tuner.pkl; the trainable is rebuilt
    from the spec and the rows saved by launch. Trials restart from scratch (their only checkpoint is the
    final adapter).
    """
    from ray import tune

    from sweeper.tune.refshare import shared_references

    check_resumable(experiment)
    # model.reference: shared: the sweep's cache under trials/<name>/refcache is found again (or recomputed)
    refs = shared_references(spec, corner_configs(spec), train_rows, eval_rows, Path(experiment).parent,
                             gpus_per_trial)  # fmt: skip
    trainable = wrapped_trainable(spec, train_rows, eval_rows, gpus_per_trial, experiment, refs)
    tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    started = time.monotonic()
    return _counts(tuner.fit(), started)


def check_resumable(experiment: str) -> None:
    """TrialsError unless Ray saved an experiment there (tuner.pkl and an experiment state)."""
    from ray import tune

    if not tune.Tuner.can_restore(experiment) or not _has_state(experiment):
        from sweeper.errors import TrialsError

        raise TrialsError(f"{experiment}: Ray saved no experiment state there (the driver died before its first "
                          "save?): nothing to resume, launch the sweep again")  # fmt: skip


def _has_state(experiment: str) -> bool:
    if "://" in experiment:
        return True  # Tuner.restore says what is missing in a bucket
    return any(Path(experiment).glob("experiment_state-*.json"))


def _counts(grid: Any, started: float) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for result in grid:
        status = "error" if result.error else "completed"
        counts[status] = counts.get(status, 0) + 1
    counts["wall_s"] = int(time.monotonic() - started)
    return counts


def run_sweep(
    spec: Spec,
    configs: list[dict[str, Any]],
    train_rows: list[dict[str, str]],
    eval_rows: list[dict[str, str]],
    trials_root: Path,
    gpus_per_trial: float,
    gate: dict[str, Any] | None = None,
    max_failures: int = 0,
    trackers: Any = None,
) -> dict[str, Any]:
    """Run every trial through a Tuner; return counts by Ray's trial status.

    ``gate`` (see gate_settings) puts an Optuna study behind the sweep: a pruning scheduler for
    ``early_terminate``, and the TPE searcher for ``method: bayes``.
    """
    from ray import tune

    from sweeper.tune.cluster import experiment_path
    from sweeper.tune.refshare import shared_references

    names = swept_names(spec)
    mode = "max" if spec.metric.goal == "maximize" else "min"
    # model.reference: shared: the reference log-probs, computed once (a Ray task) or read from a cache
    refs = shared_references(spec, configs or corner_configs(spec), train_rows, eval_rows, trials_root,
                             gpus_per_trial)  # fmt: skip
    experiment = experiment_path(spec, trials_root / spec.name)
    trainable = wrapped_trainable(spec, train_rows, eval_rows, gpus_per_trial, experiment, refs)
    scheduler = search_alg = None
    if gate is not None:
        forget_gate(gate)  # a fresh study object per run (an earlier run may have left one)
        et = spec.early_terminate
        step_key = "sweeper/tokens_seen" if et is not None and et.step_unit == "tokens" else "sweeper/examples_seen"
        name = "hyperband" if et is not None and et.type == "hyperband" else (et.pruner if et else "nop")
        scheduler = _pruning_scheduler(gate, spec, len(train_rows), step_key, name, experiment)
    if spec.method == "bayes":
        assert gate is not None, "method: bayes samples from the sweep's study: pass gate"
        search_alg = _study_searcher(gate, spec)
        param_space: dict[str, Any] = {}
        num_samples = int(spec.run_cap or 1)
    else:
        param_space = {"params": tune.grid_search(configs)}
        num_samples = 1
    n_planned = num_samples if spec.method == "bayes" else len(configs)
    printer = ProgressPrinter(names, n_planned, spec.metric.name, experiment)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric.name,
            mode=mode,
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=spec.resources.max_concurrent_trials,
            reuse_actors=spec.resources.reuse_actors,  # off: every trial in a fresh process; each loads its model
            trial_dirname_creator=lambda t: _dirname(t, names),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.output.storage or str(trials_root.resolve()),
            verbose=0,
            callbacks=[_callback(printer, trackers)],
            # a trial whose worker or node died (or that raised) reruns from scratch, up to max_failures times
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    started = time.monotonic()
    return _counts(tuner.fit(), started)
