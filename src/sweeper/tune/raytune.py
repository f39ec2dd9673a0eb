"""The Ray Tune adapter: the one module that imports ``ray.tune``.

Ray's API churns between releases (``ray.train.report`` breaks inside Tune 2.60, ``ray.train.RunConfig``
is rejected by the Tuner); that churn is absorbed here. See ../shared/RECIPES.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.plan.compile import SweepPlan
from sweeper.plan.pruning import pruning_metric
from sweeper.plan.space import label, swept_names
from sweeper.prune.study import build_gate, fixed_params, follow, forget_gate, optuna_distributions
from sweeper.records.metrics import DONE, EXAMPLES_SEEN, GUARD, NODE_ID, NODE_IP, OOM, TOKENS_SEEN
from sweeper.tune.progress import ProgressPrinter
from sweeper.tune.runtime import keep_secrets_out_of_runtime_env


def _trainable(config: dict[str, Any], *, plan: SweepPlan, train_rows: list[dict], eval_rows: list[dict],
               experiment: str, refs: dict[str, Any] | None = None) -> None:  # fmt: skip
    import ray
    from ray import tune

    from sweeper.records.storage import trial_record, write_record
    from sweeper.records.store import ATTEMPTS_FILE, SETTINGS_FILE
    from sweeper.train.resume import resumable
    from sweeper.train.trial import TrialJob, oom_injection, run_with_oom_retries

    spec = plan.spec
    trial = plan.trial(config["params"])
    trial_dir = tune.get_context().get_trial_dir()
    # the record keeps what the trial trained with: the report and the evaluation read it, never the spec again
    write_record(trial_record(experiment, trial_dir, SETTINGS_FILE), trial.settings.as_dict())

    node = {NODE_ID: ray.get_runtime_context().get_node_id(),
            NODE_IP: ray.util.get_node_ip_address()}  # fmt: skip

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if metrics.get(OOM):  # no attempt fitted: Tune still wants the metric in the last result
            metrics = {spec.metric.name: float("nan"), **metrics}
        metrics = {**metrics, **node}  # where it ran: a retried trial shows the node it moved to
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    # model.reference: shared: the sweep's reference log-probs of this trial's group (sweeper.tune.refshare)
    pausable = pauses(spec)  # a checkpoint at every log step, and a resume from Ray's checkpoint
    job = TrialJob(trial.settings, train_rows, eval_rows, spec.resources.cpus_per_trial,
                   (refs or {}).get(trial.reference_group), pausable=pausable)  # fmt: skip
    restored = tune.get_checkpoint() if pausable else None  # a paused trial, resumed: its last checkpoint
    with restored.as_directory() if restored is not None else contextlib.nullcontext() as folder:
        run_with_oom_retries(
            job,
            report,
            oom=spec.resources.oom,
            attempts_path=trial_record(experiment, trial_dir, ATTEMPTS_FILE),
            callbacks_for=oom_injection(os.environ),  # None unless a test sets SWEEPER_TEST_OOM_AT_STEP
            resume_from=folder if resumable(folder) else None,
        )


# ---------------------------------------------------------------------------------------------
# Pruning: an Optuna study behind a Ray scheduler (and, for bayes, a Ray searcher on the same study)
# ---------------------------------------------------------------------------------------------


def pruning_scheduler(plan: SweepPlan, step_key: str, pruner_name: str, experiment: str, n_planned: int) -> Any:
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    from sweeper.prune.decide import pruned_record, stop_reason
    from sweeper.prune.guard import is_flagged
    from sweeper.prune.pause import event, sweep_book
    from sweeper.records.storage import trial_record, write_record
    from sweeper.records.store import EVENTS_FILE, PRUNED_FILE

    spec, gate = plan.spec, plan.gate
    assert gate is not None, "pruning needs the plan's gate settings: compile the plan with n_train and storage"
    metric = pruning_metric(spec)  # the held-out eval_ metric when the trials evaluate
    guard_mode = spec.early_terminate.guard if spec.early_terminate else "off"
    pausing = pauses(spec)
    limit = spec.resources.max_concurrent_trials

    class OptunaPruningScheduler(FIFOScheduler):
        """Asks the sweep's PruningGate after every result; STOP writes <trial>/pruned.json (in storage).

        With ``on_prune: pause`` a trial below the bar is PAUSED instead (Ray keeps its last checkpoint and frees
        its resources), and ``choose_trial_to_run`` resumes it when sweeper.prune.pause says the evidence changed;
        paused, resumed and pruned are written to <trial>/events.json with the examples seen at each."""

        def __init__(self) -> None:
            super().__init__()
            self.last_step: dict[str, int] = {}
            self.planned: dict[str, int] = {}
            self.events: dict[str, list[dict[str, Any]]] = {}
            self.asked: tuple[int, int, bool] | None = None  # the evidence choose_trial_to_run last decided on

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            if trial.status in ("TERMINATED", "ERROR"):  # restored by `sweeper resume`: already told to the study
                return
            follow(build_gate(gate), spec, trial.trial_id, trial.config.get("params", {}))

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get(DONE):
                return TrialScheduler.CONTINUE
            step = result.get(step_key, self.last_step.get(trial.trial_id))
            if step is None:
                return TrialScheduler.CONTINUE
            self.last_step[trial.trial_id] = int(step)
            verdict = result.get(GUARD)
            value = result.get(metric)
            if trial.trial_id not in self.planned:  # examples the trial sees if it runs to the end
                self.planned[trial.trial_id] = int(plan.trial(trial.config.get("params", {})).planned_examples or 0)
            planned = self.planned[trial.trial_id]
            at_end = int(result.get(EXAMPLES_SEEN) or 0) >= planned  # its last log: let it finish
            g = build_gate(gate)
            book = sweep_book(gate) if pausing else None
            if book is not None:
                book.observe(trial.trial_id, int(result.get(EXAMPLES_SEEN) or 0), value, is_flagged(verdict))
            why = f"{pruner_name} pruner on {metric}"
            reason = stop_reason(g, trial.trial_id, int(step), value, verdict=verdict, guard=guard_mode,
                                 at_end=at_end, why=why)  # fmt: skip
            hacking = guard_mode == "prune" and is_flagged(verdict)  # the guard stops for good, paused or not
            # breadth first only: the scans of the controller's trials are not done on every result otherwise
            if (book is not None and book.rung is not None and not hacking
                    and book.waits(trial.trial_id, int(step), at_end, self.to_start(tune_controller),
                                   self.running(tune_controller, trial), g)):  # fmt: skip
                book.wait(trial.trial_id, result, value, planned, why)
                self.note(trial, "paused", result, value, book.paused[trial.trial_id].reason)
                return TrialScheduler.PAUSE
            if reason is None:
                return TrialScheduler.CONTINUE
            if book is not None and not hacking:
                if trial.trial_id in book.final:  # resumed at the end: it runs to its end
                    return TrialScheduler.CONTINUE
                if book.may_pause(trial.trial_id):
                    book.pause(trial.trial_id, result, value, reason, planned)
                    self.note(trial, "paused", result, value, reason)
                    return TrialScheduler.PAUSE
            g.prune(trial.trial_id)
            record = pruned_record(result, planned, value, reason)
            write_record(trial_record(experiment, trial.path, PRUNED_FILE), record)
            if book is not None:
                book.forget(trial.trial_id)
                self.note(trial, "pruned", result, value, reason)
            return TrialScheduler.STOP

        def choose_trial_to_run(self, tune_controller: Any) -> Any:
            if not pausing:
                return super().choose_trial_to_run(tune_controller)
            trials = tune_controller.get_trials()
            pending = [t for t in trials if t.status == "PENDING"]
            if pending:  # new (and already resumed) trials first
                return pending[0]
            book = sweep_book(gate)
            waiting = [t for t in trials if t.status == "PAUSED" and t.trial_id in book.paused]
            active = sum(t.status == "RUNNING" for t in trials)
            if not waiting or (limit is not None and active >= limit):
                return None
            finished = not active and tune_controller.search_alg.is_finished()
            asked = (book.version, len(waiting), finished)
            if asked == self.asked:  # called on every loop of the controller: ask again only when something changed
                return None
            g = build_gate(gate)
            to_start, running = self.to_start(tune_controller), self.running(tune_controller)
            by_id = {t.trial_id: t for t in waiting}
            for t in [by_id[i] for i in book.asking_order(list(by_id))]:
                why = book.why_resume(t.trial_id, g, to_start=to_start, running=running)
                if why is not None:
                    return self.resume(t, why, final=False)
            self.asked = asked
            if not finished:
                return None  # the evidence may still change
            resume, prune = book.endgame()
            winner = book.winner()
            for t in waiting:
                if t.trial_id in prune:
                    self.prune_paused(tune_controller, t, f"its upper bound {_num(book.upper_bound(t.trial_id))} "
                                      f"cannot beat the winner's {_num(winner)}")  # fmt: skip
            if not resume:
                return None
            chosen = next(t for t in waiting if t.trial_id == resume[0])
            bound = _num(book.upper_bound(chosen.trial_id))
            why = (f"its upper bound {bound} could beat the winner's {_num(winner)}" if winner is not None else
                   f"no trial completed: the paused trial with the best upper bound ({bound})")  # fmt: skip
            return self.resume(chosen, why, final=True)

        def to_start(self, tune_controller: Any) -> bool:
            """Breadth first: whether trials of the sweep are still to start (pending, or not yet made)."""
            trials = tune_controller.get_trials()
            if any(t.status == "PENDING" for t in trials):
                return True
            return len(trials) < n_planned and not tune_controller.search_alg.is_finished()

        def running(self, tune_controller: Any, besides: Any = None) -> list[str]:
            return [t.trial_id for t in tune_controller.get_trials() if t.status == "RUNNING" and t is not besides]

        def resume(self, trial: Any, why: str, final: bool) -> Any:
            paused = sweep_book(gate).resume(trial.trial_id, final=final)
            self.note(trial, "resumed", paused.result, paused.value, why)
            return trial

        def prune_paused(self, tune_controller: Any, trial: Any, why: str) -> None:
            """A paused trial that can no longer beat the winner: pruned where it was paused, and stopped."""
            book = sweep_book(gate)
            paused = book.paused[trial.trial_id]
            build_gate(gate).prune(trial.trial_id)
            reason = f"{paused.reason}; paused, and {why}"
            write_record(trial_record(experiment, trial.path, PRUNED_FILE),
                         pruned_record(paused.result, paused.planned, paused.value, reason))  # fmt: skip
            book.forget(trial.trial_id)
            self.note(trial, "pruned", paused.result, paused.value, reason)
            tune_controller.stop_trial(trial)

        def note(self, trial: Any, kind: str, result: dict, value: Any, reason: str) -> None:
            line = event(kind, result, value, reason, time.time())
            self.events.setdefault(trial.trial_id, []).append(line)
            write_record(trial_record(experiment, trial.path, EVENTS_FILE), self.events[trial.trial_id])
            if kind != "pruned":  # the progress callback prints pruned trials
                print(f"[{trial.trial_id}] {kind} at {line['examples_seen']} examples ({metric} {_num(value)}): "
                      f"{reason}", flush=True)  # fmt: skip

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            value = (result or {}).get(metric)
            build_gate(gate).complete(trial.trial_id, value)
            if pausing:
                sweep_book(gate).complete(trial.trial_id, value if (result or {}).get(DONE) else None)

        def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
            build_gate(gate).fail(trial.trial_id)
            if pausing:
                sweep_book(gate).forget(trial.trial_id)

    return OptunaPruningScheduler()


def _num(value: Any) -> str:
    return "none" if not isinstance(value, int | float) else f"{value:.4g}"


def pauses(spec: Any) -> bool:
    """Whether the sweep pauses trials below the bar (``early_terminate.on_prune: pause``) instead of stopping them."""
    et = spec.early_terminate
    return et is not None and et.on_prune == "pause"


def pausing_search(plan: SweepPlan, searcher: Any) -> Any:
    """The search algorithm of a pausing sweep: ``max_concurrent_trials`` counts running trials only, so a paused
    trial frees its slot (and its GPU) for the next one. Ray's own limits count paused trials as live."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

    from sweeper.prune.pause import sweep_book

    assert plan.gate is not None
    settings = plan.gate
    limit = plan.spec.resources.max_concurrent_trials

    def running(live: set[str]) -> int:
        return len(live - set(sweep_book(settings).paused))

    if searcher is None:

        class _Variants(BasicVariantGenerator):
            def next_trial(self) -> Any:
                if limit is not None and running(self._live_trials) >= limit:
                    return None
                return super().next_trial()  # built without a limit of its own

        return _Variants()
    if limit is None:
        return searcher

    class _Limiter(ConcurrencyLimiter):
        def suggest(self, trial_id: str) -> dict | None:
            if running(self.live_trials) >= self.max_concurrent:
                return None
            suggestion = self.searcher.suggest(trial_id)
            if suggestion not in (None, Searcher.FINISHED):
                self.live_trials.add(trial_id)
                self.num_unfinished_live_trials += 1
            return suggestion

    return _Limiter(searcher, max_concurrent=limit)


# Checkpoints kept per trial of a pausing sweep (Ray deletes older ones as new ones are reported).
PAUSED_CHECKPOINTS_KEPT = 2


# Proposals in a row that may be ruled out (infeasible) before the searcher says the space is exhausted.
MAX_REDRAWS = 200


def study_searcher(plan: SweepPlan) -> Any:
    import optuna
    from ray.tune.search import Searcher

    from sweeper.plan import preflight

    spec, gate = plan.spec, plan.gate
    assert gate is not None, "method: bayes samples from the sweep's study: compile the plan with storage"
    mode = "max" if spec.metric.goal == "maximize" else "min"
    distributions = optuna_distributions(spec)
    fixed = {n: v for n, v in fixed_params(spec).items() if n not in distributions}

    class StudySearcher(Searcher):
        """Optuna TPE proposals from the sweep's study: the sampler and the pruner see the same trials.

        A proposal ruled out before it runs (out of memory at every batch earlier in this sweep or in an
        earlier launch: ``GateSettings.infeasible``; predicted above the GPU with ``preflight: skip``) is told to the
        study as PRUNED with no value (TPE counts it among the worst, so it steers away) and redrawn."""

        def __init__(self) -> None:
            super().__init__(metric=spec.metric.name, mode=mode)
            self.infeasible: list[dict[str, Any]] = list(gate.infeasible)
            self.params: dict[str, dict[str, Any]] = {}
            self.said: set[tuple[str, Any]] = set()

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            g = build_gate(gate)
            for _ in range(MAX_REDRAWS):
                optuna_trial = g.study.ask(distributions)
                params = {**fixed, **optuna_trial.params}
                why = preflight.infeasible_reason(plan, params, self.infeasible)
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
            if (result or {}).get(OOM) and trial_id in self.params:
                self.infeasible.append(
                    preflight.oom_row(plan.trial(self.params[trial_id]), trial_id, spec.resources.oom)
                )

        def save(self, checkpoint_path: str) -> None:  # `sweeper resume` reloads the study from optuna.db
            Path(checkpoint_path).write_text("the state is the Optuna study in optuna.db\n")

        def restore(self, checkpoint_path: str) -> None: ...

    return StudySearcher()


def _dirname(trial: Any, names: list[str]) -> str:
    text = label(trial.config.get("params", {}), names).replace(" ", "_")
    return f"{trial.trial_id}--{re.sub(r'[^A-Za-z0-9_.=-]', '', text)}"[:120].rstrip("-")


def _callback(printer: ProgressPrinter, trackers: Any = None, pausing: bool = False) -> Any:
    """Progress lines, and the sweep's trackers (sweeper.records.tracking: they run here, in the driver). In a
    pausing sweep a trial that starts again continues from its checkpoint: the same tracking run goes on."""
    from ray import tune

    class _Progress(tune.Callback):
        def __init__(self) -> None:
            self.started: set[str] = set()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if pausing and trial.trial_id in self.started:  # resumed from its checkpoint: the same run goes on
                printer.resumed(trial)
                return
            self.started.add(trial.trial_id)
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
                trackers.end_trial(trial.trial_id, "completed" if DONE in (trial.last_result or {})
                                   else "stopped")  # fmt: skip

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            if trackers is not None:
                trackers.close()

    return _Progress()


def wrapped_trainable(plan: SweepPlan, train_rows: list[dict], eval_rows: list[dict], gpus_per_trial: float,
                      experiment: str, refs: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """The trainable with the sweep's plan, rows, storage (and shared reference log-probs) bound: launch and
    resume build it the same way."""
    from ray import tune

    keep_secrets_out_of_runtime_env()

    return tune.with_resources(
        tune.with_parameters(
            _trainable, plan=plan, train_rows=train_rows, eval_rows=eval_rows, experiment=experiment, refs=refs
        ),
        {"cpu": plan.spec.resources.cpus_per_trial, "gpu": gpus_per_trial},
    )


def resume_sweep(plan: SweepPlan, experiment: str, train_rows: list[dict[str, str]],
                 eval_rows: list[dict[str, str]], gpus_per_trial: float) -> dict[str, Any]:  # fmt: skip
    """Tuner.restore of a killed sweep: finished trials are kept, unfinished and errored ones run again.

    Scheduler, searcher, callbacks and run settings come back from Ray's tuner.pkl; the trainable is rebuilt
    from the spec and the rows saved by launch. Trials restart from scratch (their only checkpoint is the
    final adapter).
    """
    from ray import tune

    from sweeper.tune.refshare import shared_references

    check_resumable(experiment)
    # model.reference: shared: the sweep's cache under trials/<name>/refcache is found again (or recomputed)
    began = time.monotonic()
    refs = shared_references(plan, train_rows, eval_rows, Path(experiment).parent, gpus_per_trial)
    references_s = time.monotonic() - began
    trainable = wrapped_trainable(plan, train_rows, eval_rows, gpus_per_trial, experiment, refs)
    tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    started = time.monotonic()
    return {**_counts(tuner.fit(), started), "references_s": round(references_s, 1)}


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
    counts: dict[str, Any] = dict(Counter("error" if result.error else "completed" for result in grid))
    counts["wall_s"] = int(time.monotonic() - started)
    return counts


def run_sweep(plan: SweepPlan, train_rows: list[dict[str, str]], eval_rows: list[dict[str, str]],
              gpus_per_trial: float, max_failures: int = 0, trackers: Any = None) -> dict[str, Any]:  # fmt: skip
    """Run the plan's trials through a Tuner (results in output.trials_dir or output.storage); return counts by
    Ray's trial status."""
    from ray import tune

    from sweeper.tune.cluster import experiment_path
    from sweeper.tune.refshare import shared_references

    spec = plan.spec
    trials_root = Path(spec.output.trials_dir)
    names = swept_names(spec)
    # model.reference: shared: the reference log-probs, computed once (a Ray task) or read from a cache
    began = time.monotonic()
    refs = shared_references(plan, train_rows, eval_rows, trials_root, gpus_per_trial)
    references_s = time.monotonic() - began
    experiment = experiment_path(spec, trials_root / spec.name)
    trainable = wrapped_trainable(plan, train_rows, eval_rows, gpus_per_trial, experiment, refs)
    search = _search(plan, experiment)
    printer = ProgressPrinter(names, search.n_planned, spec.metric.name, experiment)
    tuner = tune.Tuner(
        trainable,
        param_space=search.param_space,
        tune_config=tune.TuneConfig(
            metric=spec.metric.name,
            mode="max" if spec.metric.goal == "maximize" else "min",
            num_samples=search.num_samples,
            search_alg=search.searcher,
            scheduler=search.scheduler,
            max_concurrent_trials=search.max_concurrent,
            reuse_actors=spec.resources.reuse_actors,  # off: every trial in a fresh process; each loads its model
            trial_dirname_creator=lambda t: _dirname(t, names),
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.output.storage or str(trials_root.resolve()),
            verbose=0,
            callbacks=[_callback(printer, trackers, pauses(spec))],
            # a trial whose worker or node died (or that raised) reruns from scratch, up to max_failures times
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # a pausing sweep reports a checkpoint at every log step: keep the last two (the final adapter, or the
            # checkpoint a paused trial resumes from, is always the latest)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=PAUSED_CHECKPOINTS_KEPT) if pauses(spec) else None,
        ),
    )
    started = time.monotonic()
    return {**_counts(tuner.fit(), started), "references_s": round(references_s, 1)}


@dataclass(frozen=True)
class _Search:
    param_space: dict[str, Any]
    num_samples: int
    n_planned: int
    scheduler: Any  # the pruning scheduler on the plan's gate, or None (Tune's FIFO)
    searcher: Any  # bayes: TPE proposals from the same study; None: the grid/random configs as listed
    max_concurrent: int | None  # Tune's max_concurrent_trials (None when a pausing search limits it itself)


def _search(plan: SweepPlan, experiment: str) -> _Search:
    """What Tune runs: the listed configs, or TPE proposals (bayes), behind the pruning scheduler when there is one."""
    from ray import tune

    from sweeper.prune.pause import forget_book

    spec, scheduler = plan.spec, None
    if plan.gate is not None:
        forget_gate(plan.gate)  # a fresh study object per run (an earlier run may have left one)
        forget_book(plan.gate.key)
        et = spec.early_terminate
        step_key = TOKENS_SEEN if et is not None and et.step_unit == "tokens" else EXAMPLES_SEEN
        name = "hyperband" if et is not None and et.type == "hyperband" else (et.pruner if et else "nop")
        n_planned = int(spec.run_cap or 1) if spec.method == "bayes" else len(plan.configs)
        scheduler = pruning_scheduler(plan, step_key, name, experiment, n_planned)
    searcher = study_searcher(plan) if spec.method == "bayes" else None
    limit = spec.resources.max_concurrent_trials
    if plan.gate is not None and pauses(spec):
        searcher, limit = pausing_search(plan, searcher), None
    if spec.method == "bayes":
        n = int(spec.run_cap or 1)
        return _Search({}, n, n, scheduler, searcher, limit)
    return _Search({"params": tune.grid_search(plan.configs)}, 1, len(plan.configs), scheduler, searcher, limit)
