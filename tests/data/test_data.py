"""sweeper.data.rows: validation, chat-template rendering (both template kinds), loading and splitting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sweeper.data.rows import (
    SYSTEM_ACK,
    RowReport,
    format_rows,
    load_rows,
    load_valid_rows,
    make_prompt_renderer,
    require_valid_rows,
    split_rows,
    template_accepts_system,
    tokenizer_adds_bos,
    validate_rows,
)
from sweeper.data.synthetic import BUILTIN_DATA, synthetic_preference_rows
from sweeper.errors import DataError

# Nothing may come from the Hugging Face Hub here (read when huggingface_hub is first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
ORCA_SAMPLE20 = FIXTURES / "orca_sample20.jsonl"
# CI clones the repo with ../shared/ beside its root.
SHARED_ORCA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "orca_dpo_pairs_sample284.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep datasets' Arrow cache out of the home folder (read at each load_dataset call)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.getbasetemp() / "datasets"))


@pytest.fixture(scope="module", params=["mistral", "chatml"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    from sweeper.train.tiny import build_tokenizer

    return build_tokenizer(request.param)


@pytest.fixture(scope="module")
def mistral_tokenizer() -> Any:
    from sweeper.train.tiny import build_tokenizer

    return build_tokenizer("mistral")


@pytest.fixture(scope="module")
def chatml_tokenizer() -> Any:
    from sweeper.train.tiny import build_tokenizer

    return build_tokenizer("chatml")


# --- light imports --------------------------------------------------------------------------------


def test_data_and_synthetic_import_no_heavy_framework() -> None:
    code = (
        "import sys, sweeper.data.rows, sweeper.data.synthetic\n"
        "heavy = ('torch', 'transformers', 'trl', 'peft', 'ray', 'datasets')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --- validation -----------------------------------------------------------------------------------


def test_bad_rows_are_counted_by_reason_and_skipped() -> None:
    clean, report = validate_rows(load_rows(str(FIXTURES / "bad_rows_orca.jsonl")), "orca")
    # Three good rows: system given, system "", system absent (both become ""). The third has the answers
    # "4" and "5": JSON-looking strings in a mixed-type column must stay strings (datasets 5.2 decodes them).
    assert [row["question"] for row in clean] == ["Is water wet?", "Name a primary colour.", "What is 2 + 2?"]
    assert [row["system"] for row in clean] == ["You are a careful assistant.", "", ""]
    assert set(clean[0]) == {"system", "question", "chosen", "rejected"}
    assert report == RowReport(
        n_total=12,
        n_valid=3,
        skipped={
            "missing 'question'": 2,  # key absent, and null
            "empty 'chosen'": 1,
            "empty 'rejected'": 1,  # whitespace only
            "chosen == rejected": 2,  # identical, and identical up to surrounding whitespace
            "non-text 'chosen'": 1,  # a number
            "non-text 'rejected'": 1,  # a list
            "non-text 'system'": 1,
        },
        format="orca",
    )


def test_summary_is_one_line_with_reasons_most_frequent_first() -> None:
    report = RowReport(n_total=284, n_valid=280, skipped={"chosen == rejected": 1, "empty 'chosen'": 3})
    assert report.summary() == "284 rows: 280 valid, skipped 3 empty 'chosen', 1 chosen == rejected"
    assert RowReport(n_total=1, n_valid=1, skipped={}).summary() == "1 row: 1 valid"


def test_prompt_chosen_rejected_rows_validate() -> None:
    clean, report = validate_rows(_read_jsonl(FIXTURES / "pcr_rows.jsonl"), "prompt_chosen_rejected")
    assert report.n_valid == 3 and report.skipped == {"empty 'prompt'": 1}
    assert set(clean[0]) == {"prompt", "chosen", "rejected"}


def test_orca_rows_in_the_wrong_format_are_all_missing_the_prompt() -> None:
    _, report = validate_rows(_read_jsonl(ORCA_SAMPLE20), "prompt_chosen_rejected")
    assert report.n_valid == 0 and report.skipped == {"missing 'prompt'": 20}


def test_non_object_rows_are_skipped() -> None:
    _, report = validate_rows([["a", "b"], "text"], "orca")  # type: ignore[list-item]
    assert report.skipped == {"not an object": 2}


def test_a_file_without_valid_rows_names_the_file() -> None:
    path = FIXTURES / "no_valid_rows.jsonl"
    with pytest.raises(DataError) as caught:
        load_valid_rows(str(path), "orca")
    message = str(caught.value)
    assert str(path) in message and "no usable preference rows" in message
    assert "3 rows: 0 valid" in message  # the RowReport summary
    assert "\n" not in message


def test_require_valid_rows_passes_when_a_row_survives() -> None:
    require_valid_rows(RowReport(n_total=2, n_valid=1, skipped={"empty 'chosen'": 1}), "x.jsonl", "orca")


def test_unknown_format_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown data format 'csv'; use one of: auto, orca, prompt_chosen_rejected, "
                                        "conversational"):  # fmt: skip
        validate_rows([], "csv")


# --- rendering ------------------------------------------------------------------------------------


def test_template_probes(mistral_tokenizer: Any, chatml_tokenizer: Any) -> None:
    assert template_accepts_system(mistral_tokenizer) is False  # raises "Conversation roles must alternate"
    assert template_accepts_system(chatml_tokenizer) is True
    # Both tiny tokenizers add BOS by themselves, like Mistral's.
    assert tokenizer_adds_bos(mistral_tokenizer) and tokenizer_adds_bos(chatml_tokenizer)


def test_mistral_template_gets_the_system_workaround(mistral_tokenizer: Any) -> None:
    row = validate_rows(_read_jsonl(ORCA_SAMPLE20), "orca")[0][0]
    prompt = format_rows([row], "orca", make_prompt_renderer(mistral_tokenizer))[0]["prompt"]
    # system as a first user turn, a canned assistant reply, then the question; BOS string stripped.
    assert prompt == (f"[INST] {row['system']} [/INST]{SYSTEM_ACK}</s>[INST] {row['question']} [/INST]")


def test_chatml_template_gets_a_system_turn(chatml_tokenizer: Any) -> None:
    row = validate_rows(_read_jsonl(ORCA_SAMPLE20), "orca")[0][0]
    prompt = format_rows([row], "orca", make_prompt_renderer(chatml_tokenizer))[0]["prompt"]
    assert prompt == (
        f"<|im_start|>system\n{row['system']}<|im_end|>\n"
        f"<|im_start|>user\n{row['question']}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert SYSTEM_ACK not in prompt


def test_empty_system_renders_only_the_user_turn(mistral_tokenizer: Any, chatml_tokenizer: Any) -> None:
    assert make_prompt_renderer(mistral_tokenizer)("", "Hi?") == "[INST] Hi? [/INST]"
    assert (
        make_prompt_renderer(chatml_tokenizer)("", "Hi?") == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_prompt_chosen_rejected_prompt_is_a_user_turn(mistral_tokenizer: Any) -> None:
    clean, _ = validate_rows(_read_jsonl(FIXTURES / "pcr_rows.jsonl"), "prompt_chosen_rejected")
    formatted = format_rows(clean, "prompt_chosen_rejected", make_prompt_renderer(mistral_tokenizer))
    assert formatted[1] == {
        "prompt": "[INST] Name the largest planet. [/INST]",
        "chosen": "Jupiter.",
        "rejected": "Mars.",
    }


def _assert_one_bos_and_prompt_prefix(tokenizer: Any, rows: list[dict[str, str]]) -> None:
    """As TRL tokenizes: tokenizer(text=prompt) and tokenizer(text=prompt + answer)."""
    bos = tokenizer.bos_token_id
    for row in rows:
        prompt_ids = tokenizer(text=row["prompt"])["input_ids"]
        assert prompt_ids[0] == bos and prompt_ids.count(bos) == 1, row["prompt"]
        for answer in (row["chosen"], row["rejected"]):
            full_ids = tokenizer(text=row["prompt"] + answer)["input_ids"]
            assert full_ids.count(bos) == 1
            # No merge across the prompt/answer boundary: TRL would otherwise drop the prompt's tail.
            assert full_ids[: len(prompt_ids)] == prompt_ids


def test_no_double_bos_on_orca_rows(tokenizer: Any) -> None:
    clean, _ = validate_rows(_read_jsonl(ORCA_SAMPLE20), "orca")
    rows = format_rows(clean, "orca", make_prompt_renderer(tokenizer))
    assert not rows[0]["prompt"].startswith("<s>")
    _assert_one_bos_and_prompt_prefix(tokenizer, rows)


def test_no_double_bos_on_synthetic_rows(tokenizer: Any) -> None:
    clean, _ = validate_rows(synthetic_preference_rows(64), "orca")
    _assert_one_bos_and_prompt_prefix(tokenizer, format_rows(clean, "orca", make_prompt_renderer(tokenizer)))


def test_the_template_bos_is_kept_when_the_tokenizer_adds_none(mistral_tokenizer: Any) -> None:
    no_bos = _StubTokenizer(mistral_tokenizer.chat_template, adds_bos=False)
    assert make_prompt_renderer(no_bos)("", "Hi?") == "<s>[INST] Hi? [/INST]"


def test_a_template_that_drops_the_system_turn_does_not_accept_it() -> None:
    drops = "{% for m in messages %}{% if m['role'] == 'user' %}U: {{ m['content'] }}\n{% endif %}{% endfor %}"
    assert template_accepts_system(_StubTokenizer(drops, adds_bos=False)) is False


def test_a_tokenizer_without_chat_template_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no chat template"):
        make_prompt_renderer(_StubTokenizer(None, adds_bos=False))


class _StubTokenizer:
    """A duck-typed tokenizer: jinja rendering, one token per character, optional BOS."""

    bos_token = "<s>"
    bos_token_id = 1

    def __init__(self, chat_template: str | None, adds_bos: bool) -> None:
        self.chat_template = chat_template
        self._adds_bos = adds_bos

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> str:
        import jinja2

        def raise_exception(message: str) -> None:
            raise jinja2.TemplateError(message)

        template = jinja2.Environment().from_string(str(self.chat_template))
        return template.render(
            messages=conversation,
            bos_token="<s>",
            eos_token="</s>",
            raise_exception=raise_exception,
            add_generation_prompt=kwargs.get("add_generation_prompt", False),
        )

    def __call__(self, text: str, /) -> dict[str, list[int]]:
        return {"input_ids": ([1] if self._adds_bos else []) + [ord(c) for c in text]}


@pytest.mark.skipif(not SHARED_ORCA.is_file(), reason=f"shared data not found at {SHARED_ORCA}")
def test_all_284_shared_orca_rows_format_with_one_bos(mistral_tokenizer: Any) -> None:
    clean, report = validate_rows(_read_jsonl(SHARED_ORCA), "orca")
    assert report.summary() == "284 rows: 284 valid"
    rows = format_rows(clean, "orca", make_prompt_renderer(mistral_tokenizer))
    assert all(row["prompt"].startswith("[INST] ") and SYSTEM_ACK in row["prompt"] for row in rows)
    bos = mistral_tokenizer.bos_token_id
    assert all(mistral_tokenizer(text=row["prompt"])["input_ids"].count(bos) == 1 for row in rows)


# --- loading --------------------------------------------------------------------------------------


def test_jsonl_json_and_parquet_load_the_same_rows(tmp_path: Path) -> None:
    import pandas as pd

    expected = _read_jsonl(FIXTURES / "pcr_rows.jsonl")
    parquet = tmp_path / "pcr_rows.parquet"
    pd.DataFrame(expected).to_parquet(parquet)
    assert load_rows(str(FIXTURES / "pcr_rows.jsonl")) == expected
    assert load_rows(str(FIXTURES / "pcr_rows.json")) == expected
    assert load_rows(str(parquet)) == expected


def test_builtin_synthetic_source() -> None:
    assert load_rows(BUILTIN_DATA) == synthetic_preference_rows()


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=f"^{missing}: no such file; check the path"):
        load_rows(str(missing))


def test_an_unreadable_file_is_a_data_error() -> None:
    path = FIXTURES / "not_json.jsonl"
    with pytest.raises(DataError) as caught:
        load_rows(str(path))
    assert str(caught.value).startswith(f"{path}: line 2 is not valid JSON (")
    assert "\n" not in str(caught.value)


def test_a_json_object_is_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "object.json"
    path.write_text(json.dumps({"rows": [{"prompt": "q", "chosen": "a", "rejected": "b"}]}, indent=2))
    with pytest.raises(DataError, match="holds one JSON object, not rows; write a JSON array"):
        load_rows(str(path))


def test_json_lines_in_a_json_file_load(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text((FIXTURES / "pcr_rows.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    assert load_rows(str(path)) == _read_jsonl(FIXTURES / "pcr_rows.jsonl")


def test_a_broken_parquet_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: could not be read as Parquet \(.*\); fix or re-export"):
        load_rows(str(path))


def test_an_unsupported_file_type_says_which_types_work() -> None:
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'; convert it to \.jsonl, \.json or \.parquet"):
        load_rows(str(FIXTURES / "rows.csv"))


def test_a_hub_id_that_cannot_be_loaded_says_why_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # fail fast, whatever the environment says
    with pytest.raises(DataError) as caught:
        load_rows("sweeper-tests/no-such-dataset")
    message = str(caught.value)
    assert message.startswith("sweeper-tests/no-such-dataset: could not be loaded as a Hub dataset, split 'train' (")
    assert "check the id, data.name and data.split, or give a local .jsonl/.json/.parquet path" in message
    assert "\n" not in message


# --- splitting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test_size", "n_test"),
    [(0, 0), (0.1, 10), (0.25, 25), (0.001, 1), (7, 7), (7.0, 7)],  # fractions round up, like datasets
)
def test_split_sizes(test_size: float, n_test: int) -> None:
    rows = list(range(100))
    train, test = split_rows(rows, test_size, seed=0)
    assert len(test) == n_test and len(train) == 100 - n_test
    assert sorted(train + test) == rows  # a partition


def test_split_is_deterministic_per_seed() -> None:
    rows = list(range(50))
    assert split_rows(rows, 0.2, seed=3) == split_rows(rows, 0.2, seed=3)
    assert split_rows(rows, 0.2, seed=3) != split_rows(rows, 0.2, seed=4)
    assert split_rows(rows, 0, seed=3)[0] != rows  # shuffled even without a test split


@pytest.mark.parametrize("test_size", [-0.1, 2.5])
def test_split_rejects_bad_sizes(test_size: float) -> None:
    with pytest.raises(ValueError, match="test_size must be"):
        split_rows([1, 2, 3], test_size, seed=0)


def test_split_that_leaves_no_training_rows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="takes 3 of 3 rows and leaves none for training"):
        split_rows([1, 2, 3], 3, seed=0)


# --- synthetic rows -------------------------------------------------------------------------------


def test_synthetic_rows_are_deterministic_valid_and_distinct() -> None:
    rows = synthetic_preference_rows(128, seed=5)
    assert rows == synthetic_preference_rows(128, seed=5)
    assert rows != synthetic_preference_rows(128, seed=6)
    clean, report = validate_rows(rows, "orca")
    assert report.n_valid == 128 and clean == rows
    # The learnable signal: cautious chosen, harmful rejected, never overlapping.
    assert all(row["chosen"].startswith("Please") and "doctor" in row["chosen"] for row in rows)
    assert all("double dose" in row["rejected"] and "Please" not in row["rejected"] for row in rows)
    systems = {row["system"] for row in rows}
    assert "" in systems and len(systems - {""}) >= 2


def test_synthetic_rows_render_short(tokenizer: Any) -> None:
    render: Callable[[str, str], str] = make_prompt_renderer(tokenizer)
    rows = format_rows(synthetic_preference_rows(), "orca", render)
    longest = max(
        len(tokenizer(text=row["prompt"] + answer)["input_ids"]) + 1  # + the EOS TRL appends
        for row in rows
        for answer in (row["chosen"], row["rejected"])
    )
    assert longest <= 56  # fits max_length 64, even with Mistral's system workaround


def test_the_shipped_orca_rows_load_as_a_builtin_with_their_licence() -> None:
    from sweeper.data import BUILTIN_ORCA, load_rows, shipped_path, validate_rows

    rows = load_rows(BUILTIN_ORCA)
    assert len(rows) == 284 and set(rows[0]) == {"system", "question", "chosen", "rejected"}
    valid, report = validate_rows(rows, "orca")
    assert len(valid) == 284 and report.skipped == {}
    folder = shipped_path(BUILTIN_ORCA).parent
    assert "MIT license" in (folder / "orca_dpo_pairs_LICENSE.md").read_text()


def test_an_unknown_builtin_data_set_names_the_known_ones() -> None:
    from sweeper.data import load_rows

    with pytest.raises(DataError, match="builtin:orca: no such builtin data set; use one of builtin:synthetic, "
                                        "builtin:orca_dpo_pairs"):  # fmt: skip
        load_rows("builtin:orca")
