"""How sensitive the sweep's metric is to each swept parameter: Optuna's parameter importances on the trials.

The finished trials become an in-memory Optuna study (their swept values as params with the spec's
distributions, their final metric as the value), and Optuna's own evaluators rank the parameters: PED-ANOVA
(no extra dependency) and fANOVA (a random forest, needs scikit-learn). Importances from a handful of trials
are noise, so below MIN_TRIALS completed trials the report says so instead of printing numbers.

Light module: imports optuna (and, through fANOVA, scikit-learn) only inside the function.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from sweeper.config.spec import Spec
from sweeper.records.store import SweepRecord

__all__ = ["MIN_TRIALS", "Sensitivity", "sensitivity", "sensitivity_lines"]

# Fewer finished trials than this and importances say more about the noise than about the parameters.
MIN_TRIALS = 8
EVALUATORS = ("PED-ANOVA", "fANOVA")


@dataclass(frozen=True)
class Sensitivity:
    swept: list[str]
    n_trials: int
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> parameter -> share
    skipped: dict[str, str] = field(default_factory=dict)  # evaluator -> why it did not run
    reason: str | None = None  # why there are no importances at all

    @property
    def ranked(self) -> list[str]:
        """Parameters by their mean importance over the evaluators that ran, most important first."""
        if not self.importances:
            return []
        mean = {p: sum(v.get(p, 0.0) for v in self.importances.values()) / len(self.importances) for p in self.swept}
        return sorted(self.swept, key=lambda p: -mean[p])


def sensitivity(sweep: SweepRecord, metric: str, goal: str) -> Sensitivity | None:
    """Importances of the swept parameters for ``metric`` over the completed trials; None with nothing swept."""
    swept = [name for name in sweep.meta.get("swept", []) if name]
    if not swept:
        return None
    done = [t for t in sweep.trials if t.status == "completed" and isinstance(t.value(metric), int | float)]
    if len(done) < MIN_TRIALS:
        return Sensitivity(swept, len(done), reason=f"{len(done)} completed trial(s), fewer than {MIN_TRIALS}: "
                           "parameter importances from so few trials would rank noise")  # fmt: skip
    import optuna

    from sweeper.prune.study import optuna_distributions

    spec = Spec.model_validate(sweep.meta["spec"])
    distributions = {k: v for k, v in optuna_distributions(spec).items() if k in swept}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=goal)
    for t in done:
        params = {k: t.params[k] for k in distributions if k in t.params}
        if len(params) != len(distributions):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(t.value(metric))))  # fmt: skip
    evaluators = {"PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator, "fANOVA": _fanova}
    importances, skipped = {}, {}
    for name, make in evaluators.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning of PED-ANOVA
                importances[name] = dict(optuna.importance.get_param_importances(study, evaluator=make()))
        except ImportError as exc:
            skipped[name] = f"needs {str(exc).split(chr(39))[1] if chr(39) in str(exc) else 'an extra package'}"
        except (RuntimeError, ValueError) as exc:  # e.g. every value equal: nothing to attribute
            skipped[name] = str(exc).splitlines()[0][:120]
    return Sensitivity(swept, len(study.trials), importances, skipped)


def _fanova() -> Any:
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(seed=0)


def sensitivity_lines(s: Sensitivity | None, metric: str) -> list[str]:
    """The report's "Sensitivity" section (without the slice plots, which the plots section carries)."""
    if s is None:
        return []
    if s.reason:
        return [f"Parameter importances: not computed, {s.reason}."]
    head = "| parameter | " + " | ".join(n for n in EVALUATORS if n in s.importances) + " |"
    lines = [head, "|---|" + "---|" * len(s.importances)]
    for p in s.ranked:
        lines.append(f"| `{p}` | " + " | ".join(f"{s.importances[n].get(p, 0.0):.0%}" for n in EVALUATORS
                                                if n in s.importances) + " |")  # fmt: skip
    top = s.ranked[0]
    lines += ["", f"Share of the variation in final `{metric}` over {s.n_trials} completed trials that each "
              "parameter explains (Optuna's evaluators; each column sums to 100%): the sweep is most sensitive to "
              f"`{top}`."]  # fmt: skip
    for name, why in s.skipped.items():
        lines.append(f"{name}: not computed ({why}).")
    return lines
