"""Search space: a spec's parameters expanded into trial configs, and the settings of one trial.

Light module: imports neither torch nor ray. ``method: bayes`` is sampled at run time by the searcher;
grid and random configs are listed here, so ``--dry-run`` shows exactly what will run.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from typing import Any

from sweeper.config.spec import Parameter, Spec, parameter_values
from sweeper.errors import SpecError

# Short labels for trial names and progress lines.
ABBREVIATIONS = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "bs",
    "gradient_accumulation_steps": "ga",
    "num_train_epochs": "ep",
    "quantization": "q",
    "reference": "ref",
}


def swept_names(spec: Spec) -> list[str]:
    """Parameters that vary between trials (more than one value, or a distribution), in spec order."""
    return [
        name
        for name, p in spec.parameters.items()
        if p.kind not in ("value", "values") or (p.values is not None and len(p.values) > 1)
    ]


def expand(spec: Spec) -> list[dict[str, Any]]:
    """Every trial's parameter values, for grid and random; bayes trials are proposed while running.

    A grid is walked lazily, so ``run_cap`` bounds the work: 1,000 values in each of three parameters with
    ``run_cap: 4`` builds 4 configs, not a billion (the spec refuses a grid over MAX_GRID_TRIALS without a cap).
    """
    if spec.method == "grid":
        return list(itertools.islice(_grid(spec), spec.run_cap))
    if spec.method == "random":
        rng = random.Random(spec.seed)
        return [_sample(spec, rng) for _ in range(spec.run_cap or 1)]
    return []


def n_trials(spec: Spec) -> int:
    return len(expand(spec)) if spec.method != "bayes" else int(spec.run_cap or 1)


def _grid(spec: Spec) -> Iterator[dict[str, Any]]:
    names = list(spec.parameters)
    value_lists = [parameter_values(n, spec.parameters[n]) for n in names]
    return (dict(zip(names, combo, strict=True)) for combo in itertools.product(*value_lists))


def _sample(spec: Spec, rng: random.Random) -> dict[str, Any]:
    return {name: sample_value(name, p, rng) for name, p in spec.parameters.items()}


def sample_value(name: str, p: Parameter, rng: random.Random) -> Any:
    kind = p.kind
    if kind in ("values", "value", "categorical"):
        return rng.choice(parameter_values(name, p))
    lo, hi = float(p.min or 0), float(p.max or 0)
    if kind == "log_uniform_values":
        value: Any = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    elif kind == "int_uniform":
        value = rng.randint(math.ceil(lo), math.floor(hi))
    elif kind == "q_uniform":
        q = p.q or 1.0
        value = round(rng.uniform(lo, hi) / q) * q
    else:
        value = rng.uniform(lo, hi)
    try:
        return parameter_values(name, Parameter(value=value))[0]
    except Exception as exc:  # noqa: BLE001 - pydantic's message is the useful part
        raise SpecError(
            f"parameters.{name}: sampled {value!r} is not valid for this field ({exc}); "
            "use int_uniform for integer fields"
        ) from None


def label(params: dict[str, Any], names: list[str] | None = None) -> str:
    """A short human label such as ``lr=5e-05 ga=8``."""
    keys = names if names is not None else list(params)
    return " ".join(f"{ABBREVIATIONS.get(k, k)}={_fmt(params[k])}" for k in keys if k in params)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def corner_configs(spec: Spec) -> list[dict[str, Any]]:
    """Configs at the edges of the space: what bayes may propose, for budgets known before it runs."""
    if spec.method != "bayes":
        return expand(spec)
    options: dict[str, list[Any]] = {}
    for name, p in spec.parameters.items():
        if p.kind in ("values", "value", "categorical"):
            options[name] = parameter_values(name, p)
        else:
            edges = [p.min, p.max]
            options[name] = [int(v) if p.kind == "int_uniform" else v for v in edges]
    return [dict(zip(options, combo, strict=True)) for combo in itertools.product(*options.values())]
