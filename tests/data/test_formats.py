"""Every common preference-data format: detected from its columns, normalised to prompt turns + two answers, and
rendered through the chat template (fixtures in tests/fixtures/data/formats/, three rows each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sweeper.data.formats import Skip, detect_format, normalise
from sweeper.data.rows import format_rows, load_rows, load_valid_rows, make_prompt_renderer, validate_rows
from sweeper.errors import DataError

FORMATS = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "formats"
SHARED_DEMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "llamafactory_v1_dpo_demo.jsonl"
QUESTION = "I have a headache after a long flight. What can I take?"
CHOSEN = (
    "Rest, drink water and, if you have no allergy, a standard dose of paracetamol may help; see a doctor if it lasts."
)
SYSTEM = "You are a careful medical assistant."

EXPECTED = {  # file -> (detected format, has the system turn)
    "conversational": ("conversational", True),
    "ultrafeedback": ("conversational", False),
    "implicit_conversational": ("implicit_prompt", False),
    "hh_rlhf": ("hh_rlhf", False),
    "sharegpt": ("sharegpt", True),
    "alpaca": ("alpaca", False),
}


@pytest.fixture(scope="module", params=["mistral", "chatml"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    from sweeper.train.tiny import build_tokenizer

    return build_tokenizer(request.param)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_format_is_detected_and_renders_the_same_question_and_answers(name: str, tokenizer: Any) -> None:
    fmt, has_system = EXPECTED[name]
    rows, report = load_valid_rows(str(FORMATS / f"{name}.jsonl"), "auto")
    assert report.format == fmt and report.n_valid == 3 and report.skipped == {}
    first = rows[0]
    assert first["chosen"] == CHOSEN and first["rejected"] == "Take four painkillers at once, it will pass faster."
    assert first["messages"][-1] == {"role": "user", "content": QUESTION}
    assert (first["messages"][0] == {"role": "system", "content": SYSTEM}) is has_system
    rendered = format_rows(rows, fmt, make_prompt_renderer(tokenizer))
    assert QUESTION in rendered[0]["prompt"] and CHOSEN not in rendered[0]["prompt"]
    assert (SYSTEM in rendered[0]["prompt"]) is has_system  # via the system role or Mistral's workaround
    assert rendered[0]["chosen"] == CHOSEN


def test_text_with_an_implicit_prompt_splits_at_the_shared_prefix() -> None:
    rows, report = load_valid_rows(str(FORMATS / "implicit_text.jsonl"), "auto")
    assert report.format == "implicit_prompt"
    assert rows[0]["messages"] == [{"role": "user", "content": f"Question: {QUESTION}\nAnswer:"}]
    assert rows[0]["chosen"] == " " + CHOSEN  # TRL's rule keeps the space with the answers


def test_the_shared_prefix_rule_is_trls() -> None:
    trl = pytest.importorskip("trl.data_utils")
    for name in ("implicit_conversational", "implicit_text"):
        for row in load_rows(str(FORMATS / f"{name}.jsonl")):
            theirs = trl.extract_prompt(dict(row))
            ours = normalise(row, "implicit_prompt")
            if isinstance(theirs["prompt"], str):
                assert ours["messages"][0]["content"] == theirs["prompt"]
                assert (ours["chosen"], ours["rejected"]) == (theirs["chosen"], theirs["rejected"])
            else:
                assert ours["messages"] == theirs["prompt"]
                assert ours["chosen"] == theirs["chosen"][0]["content"]


def test_llamafactory_messages_with_text_parts_load(tokenizer: Any) -> None:
    rows, report = load_valid_rows(str(FORMATS / "llamafactory_messages.jsonl"), "auto")
    assert report.format == "llamafactory_messages" and report.n_valid == 3
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user"]
    assert rows[0]["chosen"].startswith("Abdulah Hasanagic is the proud owner")
    format_rows(rows, report.format, make_prompt_renderer(tokenizer))


@pytest.mark.skipif(not SHARED_DEMO.is_file(), reason="../shared/data is not beside this checkout")
def test_the_shared_llamafactory_demo_file_loads() -> None:
    rows, report = load_valid_rows(str(SHARED_DEMO), "auto")
    assert report.format == "llamafactory_messages" and report.n_valid == report.n_total == 10
    assert len({r["messages"][0]["content"] for r in rows}) > 1  # varied system prompts survive


def test_columns_map_other_names_onto_a_format() -> None:
    columns = {"prompt": "query", "chosen": "good", "rejected": "bad"}
    rows, report = load_valid_rows(str(FORMATS / "custom_columns.jsonl"), "auto", columns=columns)
    assert report.format == "prompt_chosen_rejected" and rows[0]["prompt"] == QUESTION
    with pytest.raises(DataError, match=r"custom_columns.jsonl: the data format could not be detected \(columns bad, "
                                        r"good, query\).*map your columns with data.columns"):  # fmt: skip
        load_valid_rows(str(FORMATS / "custom_columns.jsonl"), "auto")


def test_unusable_rows_are_counted_by_reason() -> None:
    u, a = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    rows = [
        {"prompt": [u], "chosen": [a], "rejected": [a]},
        {"prompt": [u], "chosen": [a], "rejected": "b"},  # a text answer beside a message: fine
        {"prompt": [{"role": "robot", "content": "q"}], "chosen": "a", "rejected": "b"},
        {"prompt": [u], "chosen": [{"role": "assistant", "content": 7}], "rejected": "b"},
        {"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"},
        {"prompt": [u], "rejected": "b"},
    ]  # fmt: skip
    clean, report = validate_rows(rows, "conversational")
    assert len(clean) == 1 and report.skipped == {
        "chosen == rejected": 1, "unknown role in 'prompt'": 1, "non-text content in 'chosen'": 1,
        "prompt does not end with a user turn": 1, "missing 'chosen'": 1}  # fmt: skip
    with pytest.raises(Skip, match="not a Human:/Assistant: transcript"):
        normalise({"chosen": "no turns here", "rejected": "none"}, "hh_rlhf")


def test_detection_needs_chosen_and_rejected() -> None:
    assert detect_format([{"prompt": "p", "answer": "a"}]) is None
    assert detect_format([]) is None and detect_format(["text"]) is None
    assert detect_format([{"question": "q", "chosen": "a", "rejected": "b"}]) == "orca"
