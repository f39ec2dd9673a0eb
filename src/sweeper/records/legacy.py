"""Records of releases before trials wrote ``settings.json``: their settings, rebuilt from what they did record.

Those releases kept the validated spec in ``sweep.json`` (every section with its defaults filled in) and each
trial's swept values in ``params.json``; a trial's settings are the spec's sections with the values put where
a trial put them then. The table below is that release's rule, frozen: new parameters never land here, since
every trial now records its own settings. Light module: plain data.
"""

from __future__ import annotations

import copy
from typing import Any

from sweeper.records.schema import TrialSettingsRecord

# Where a swept value went in the releases before settings.json; every other name went into training.
_PLACES = {
    "quantization": ("model", "quantization"),
    "reference": ("model", "reference"),
    "lora_r": ("model", "lora", "r"),
    "lora_alpha": ("model", "lora", "lora_alpha"),
    "lora_dropout": ("model", "lora", "lora_dropout"),
    "max_length": ("data", "max_length"),
}


def legacy_settings(spec: Any, params: dict[str, Any]) -> TrialSettingsRecord | None:
    """``{"model", "data", "training"}`` of an old trial from its sweep's recorded spec; None without one."""
    if not isinstance(spec, dict) or not all(isinstance(spec.get(s), dict) for s in ("model", "data", "training")):
        return None
    settings = {s: copy.deepcopy(spec[s]) for s in ("model", "data", "training")}
    for name, value in params.items():
        *parents, leaf = _PLACES.get(name, ("training", name))
        node = settings
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrialSettingsRecord(model=settings["model"], data=settings["data"], training=settings["training"])
