"""Spec errors in words: a pydantic ValidationError becomes one line per problem, ``file: dotted.key: fix``,
with "did you mean" for typos and the allowed keys of the section. Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ValidationError


def did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_errors(exc: ValidationError, raw: dict[str, Any], source: str, root: type[BaseModel],
                  parameter: type[BaseModel]) -> list[str]:  # fmt: skip
    """One line per problem: ``source: dotted.key: message``; unknown keys get the allowed ones and a hint."""
    lines = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = _dotted(err["loc"])
        if err["type"].endswith(("_type", "_parsing")) and key in seen:
            continue  # a union's other members (number, integer, text, boolean): the first says it
        seen.add(key)
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1], root, parameter)
            hint = did_you_mean(loc[-1], parent.model_fields) if parent else ""
            allowed = f"; allowed keys: {', '.join(parent.model_fields)}" if parent else ""
            lines.append(f"{source}: {key}: unknown key{hint}{allowed}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {key}: required key is missing: add it")
        elif _names_own_key(message(err, None), key if err["loc"] else ""):
            lines.append(f"{source}: {message(err, None)}")  # a cross-field check names its own key
        else:
            value = _lookup(raw, err["loc"])
            lines.append(f"{source}: {key}: {message(err, value)}")
    return lines


def _names_own_key(message: str, key: str) -> bool:
    match = re.match(r"^([\w.\[\]/]+): ", message)
    return bool(match) and match.group(1).startswith(key)


def message(err: Any, value: Any) -> str:
    """pydantic's message for one error, lower-cased, with the offending value (our own checks as written)."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("value_error", "assertion_error"):
        return msg
    return f"{msg[0].lower()}{msg[1:]} (got {value!r})"


_UNION_TAG = re.compile(r"function-after\[.*\]|literal\[.*\]|list\[.*\]|str|int|float|bool")


def _dotted(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        elif not _UNION_TAG.fullmatch(str(p)):
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def _model_at(loc: list[str], root: type[BaseModel], parameter: type[BaseModel]) -> type[BaseModel] | None:
    """The section model that a location points into (for the keys it allows)."""
    model: Any = root
    i = 0
    while i < len(loc):
        if loc[i].isdigit():  # an index into a list of sections (evaluation.multiple_choice[0])
            i += 1
            continue
        if model is root and loc[i] == "parameters":
            if i + 1 >= len(loc):
                return None
            model, i = parameter, i + 2
            continue
        field = model.model_fields.get(loc[i])
        if field is None:
            return None
        model = _unwrap_optional(field.annotation)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        i += 1
    return model


def _unwrap_optional(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args:
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
    return annotation


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    node = raw
    for p in loc:
        if not isinstance(p, int) and _UNION_TAG.fullmatch(str(p)):
            continue  # pydantic's name of a union member, not a key of the document
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def kind(value: Any) -> str:
    """What a YAML value is, in words."""
    return "nothing (empty file)" if value is None else type(value).__name__
