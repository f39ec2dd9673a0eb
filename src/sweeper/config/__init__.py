"""The sweep spec: YAML read safely, validated once by pydantic, every error one line naming file, key and fix.

Nothing here knows about training or Ray: ``load_spec(path) -> Spec`` is the boundary, and the rest of
sweeper reads the typed ``Spec`` (through the plan of ``sweeper.plan``).
"""

from __future__ import annotations

from sweeper.config.pruners import OWN_KEYS, PRUNER_ARGS, WANDB_KEYS
from sweeper.config.safeyaml import load_yaml
from sweeper.config.spec import (
    MODEL_PARAMETERS,
    EarlyTerminate,
    EvaluationSection,
    MultipleChoiceSet,
    Parameter,
    Spec,
    load_spec,
    parameter_values,
    parse_spec,
    spec_hash,
)

__all__ = [
    "EarlyTerminate",
    "EvaluationSection",
    "MODEL_PARAMETERS",
    "MultipleChoiceSet",
    "OWN_KEYS",
    "PRUNER_ARGS",
    "Parameter",
    "Spec",
    "WANDB_KEYS",
    "load_spec",
    "load_yaml",
    "parameter_values",
    "parse_spec",
    "spec_hash",
]
