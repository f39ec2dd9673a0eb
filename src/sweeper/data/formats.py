"""The preference-data formats users have, detected and turned into one shape: prompt messages + two answers.

Every format below becomes ``{"messages": [{"role", "content"}, ...], "chosen": str, "rejected": str}``: the
prompt turns (system included) and the two assistant answers as text. ``orca`` and ``prompt_chosen_rejected``
keep their own flat shapes (``sweeper.data.rows``).

- ``conversational`` (TRL's): ``prompt`` a list of messages, ``chosen``/``rejected`` lists of assistant
  messages; also a text ``prompt`` with full conversations as answers (UltraFeedback-binarized; extra score
  columns are ignored);
- ``implicit_prompt`` (TRL's): only ``chosen``/``rejected``, each a full conversation (or text); the prompt is
  their shared prefix;
- ``hh_rlhf`` (Anthropic/hh-rlhf): ``chosen``/``rejected`` transcripts ``"\\n\\nHuman: ... \\n\\nAssistant: ..."``;
- ``llamafactory_messages`` (LLaMA-Factory v1): ``chosen_messages``/``rejected_messages``, full conversations,
  content as text parts;
- ``sharegpt`` (LLaMA-Factory ShareGPT ranking): ``conversations`` [{from, value}], ``chosen``/``rejected``
  message objects;
- ``alpaca`` (LLaMA-Factory alpaca ranking): ``instruction``, optional ``input``/``system``,
  ``chosen``/``rejected`` text.

The shared-prefix rule is TRL's ``trl.data_utils.extract_prompt`` (the longest common run of turns, or of
characters for text), written here because this layer runs in the dry run without TRL; a test holds the two
equal. Light module: the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MESSAGE_FORMATS", "Skip", "detect_format", "normalise", "rename_columns"]

MESSAGE_FORMATS = ("conversational", "implicit_prompt", "hh_rlhf", "llamafactory_messages", "sharegpt", "alpaca")

_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
          "bot": "assistant", "system": "system"}  # fmt: skip
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


class Skip(Exception):
    """A row that cannot be used, with the reason it is counted under."""


def rename_columns(row: Any, columns: Mapping[str, str]) -> Any:
    """``data.columns`` applied: ``{format's name: the file's name}``, e.g. ``{"prompt": "instruction_text"}``."""
    if not columns or not isinstance(row, Mapping):
        return row
    out = {k: v for k, v in row.items() if k not in columns.values()}
    for ours, theirs in columns.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


def detect_format(rows: Sequence[Any]) -> str | None:
    """The format of the first object row by its columns (and, for ``prompt``/``chosen``, their types), or None."""
    row = next((r for r in rows if isinstance(r, Mapping)), None)
    if row is None:
        return None
    keys = set(row)
    if {"chosen_messages", "rejected_messages"} <= keys:
        return "llamafactory_messages"
    if not {"chosen", "rejected"} <= keys:
        return None
    if "conversations" in keys:
        return "sharegpt"
    if "instruction" in keys:
        return "alpaca"
    if "question" in keys:
        return "orca"
    if "prompt" in keys:
        if isinstance(row["prompt"], list) or isinstance(row["chosen"], list):
            return "conversational"
        return "prompt_chosen_rejected"
    if isinstance(row["chosen"], str) and _HH_TURN.search("\n\n" + row["chosen"].lstrip("\n")):
        return "hh_rlhf"
    return "implicit_prompt"


def normalise(row: Any, fmt: str) -> dict[str, Any]:
    """One row of ``fmt`` as ``{"messages", "chosen", "rejected"}``; raises Skip with the reason it is unusable."""
    if not isinstance(row, Mapping):
        raise Skip("not an object")
    if fmt == "conversational":
        prompt, chosen, rejected = _conversational(row)
    elif fmt == "implicit_prompt":
        prompt, chosen, rejected = _implicit(_field(row, "chosen"), _field(row, "rejected"))
    elif fmt == "hh_rlhf":
        prompt, chosen, rejected = _split_shared(_transcript(_text(row, "chosen")), _transcript(_text(row, "rejected")))
    elif fmt == "llamafactory_messages":
        prompt, chosen, rejected = _split_shared(_messages(row, "chosen_messages"), _messages(row, "rejected_messages"))
    elif fmt == "sharegpt":
        prompt = _messages(row, "conversations")
        chosen, rejected = _answer(_field(row, "chosen"), "chosen"), _answer(_field(row, "rejected"), "rejected")
        if isinstance(row.get("system"), str) and row["system"].strip():
            prompt = [{"role": "system", "content": row["system"]}, *prompt]
    elif fmt == "alpaca":
        question = _text(row, "instruction")
        extra = row.get("input")
        if isinstance(extra, str) and extra.strip():
            question = f"{question}\n\n{extra}"
        prompt = [{"role": "user", "content": question}]
        if isinstance(row.get("system"), str) and row["system"].strip():
            prompt.insert(0, {"role": "system", "content": row["system"]})
        chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
    else:
        raise ValueError(f"not a message format: {fmt!r}")
    return _checked(prompt, chosen, rejected)


def _checked(prompt: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    if not prompt:
        raise Skip("no prompt (chosen and rejected share no turn)")
    if prompt[-1]["role"] != "user":
        raise Skip("prompt does not end with a user turn")
    if any(not m["content"].strip() for m in prompt if m["role"] != "system"):
        raise Skip("empty prompt turn")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise Skip(f"empty {name!r}")
    if chosen.strip() == rejected.strip():
        raise Skip("chosen == rejected")
    return {"messages": prompt, "chosen": chosen, "rejected": rejected}


def _field(row: Mapping[str, Any], name: str) -> Any:
    value = row.get(name)
    if value is None:
        raise Skip(f"missing {name!r}")
    return value


def _text(row: Mapping[str, Any], name: str) -> str:
    value = _field(row, name)
    if not isinstance(value, str):
        raise Skip(f"non-text {name!r}")
    return value


def _content(value: Any, where: str) -> str:
    """A message's content: text, or a list of text parts ({"type": "text", "text" | "value": ...})."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, Mapping) for p in value):
        texts = [p.get("text", p.get("value")) for p in value if p.get("type", "text") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise Skip(f"non-text content in {where!r}")


def _message(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise Skip(f"{where!r} holds a non-message")
    role = _ROLES.get(str(value.get("role", value.get("from", ""))).lower())
    if role is None:
        raise Skip(f"unknown role in {where!r}")
    return {"role": role, "content": _content(value.get("content", value.get("value")), where)}


def _messages(row: Mapping[str, Any], name: str) -> list[dict[str, str]]:
    value = _field(row, name)
    if not isinstance(value, list) or not value:
        raise Skip(f"{name!r} is not a list of messages")
    return [_message(m, name) for m in value]


def _answer(value: Any, name: str) -> str:
    """An answer given as text, one assistant message, or a list of assistant messages (joined)."""
    if isinstance(value, str):
        return value
    messages = [value] if isinstance(value, Mapping) else value
    if not isinstance(messages, list) or not messages:
        raise Skip(f"{name!r} is not text or assistant messages")
    parsed = [_message(m, name) for m in messages]
    if any(m["role"] != "assistant" for m in parsed):
        raise Skip(f"{name!r} holds a non-assistant turn after the shared prompt (multi-turn answers are not used)")
    return "\n\n".join(m["content"] for m in parsed)


def _conversational(row: Mapping[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    prompt, chosen, rejected = _field(row, "prompt"), _field(row, "chosen"), _field(row, "rejected")
    if isinstance(prompt, list):
        return [_message(m, "prompt") for m in prompt], _answer(chosen, "chosen"), _answer(rejected, "rejected")
    if not isinstance(prompt, str):
        raise Skip("non-text 'prompt'")
    if isinstance(chosen, list) and isinstance(rejected, list):  # UltraFeedback: full conversations as answers
        shared, a, b = _split_shared(
            [_message(m, "chosen") for m in chosen], [_message(m, "rejected") for m in rejected]
        )
        return shared, a, b
    return [{"role": "user", "content": prompt}], _answer(chosen, "chosen"), _answer(rejected, "rejected")


def _implicit(chosen: Any, rejected: Any) -> tuple[list[dict[str, str]], str, str]:
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_shared([_message(m, "chosen") for m in chosen], [_message(m, "rejected") for m in rejected])
    if isinstance(chosen, str) and isinstance(rejected, str):
        at = _shared_chars(chosen, rejected)
        return [{"role": "user", "content": chosen[:at]}], chosen[at:], rejected[at:]
    raise Skip("'chosen' and 'rejected' are neither both text nor both message lists")


def _shared_chars(a: str, b: str) -> int:
    """TRL's rule for text: the index of the first differing character, one earlier when a space precedes it."""
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i - 1 if i > 0 and a[i - 1] == " " else i
    return min(len(a), len(b))


def _split_shared(
    chosen: list[dict[str, str]], rejected: list[dict[str, str]]
) -> tuple[list[dict[str, str]], str, str]:
    """TRL's extract_prompt on turns: the longest common prefix is the prompt, the rest the two answers."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == len(chosen) or n == len(rejected):
        raise Skip("chosen == rejected" if chosen == rejected else "no answer after the shared prompt")
    return chosen[:n], _answer(chosen[n:], "chosen"), _answer(rejected[n:], "rejected")


def _transcript(text: str) -> list[dict[str, str]]:
    """An HH-RLHF transcript as messages; a transcript with no ``Human:``/``Assistant:`` turn is skipped."""
    parts = _HH_TURN.split("\n\n" + text.lstrip("\n"))
    if len(parts) < 3 or parts[0].strip():
        raise Skip("not a Human:/Assistant: transcript")
    return [{"role": "user" if who == "Human" else "assistant", "content": said.strip()}
            for who, said in zip(parts[1::2], parts[2::2], strict=True)]  # fmt: skip
