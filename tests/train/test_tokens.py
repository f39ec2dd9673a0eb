"""What data.max_length does to the pairs, counted as TRL tokenizes them, and what the launch says about it."""

from __future__ import annotations

from sweeper.train.prepare import length_lines
from sweeper.train.tokens import length_report


class CharTokenizer:
    """One token per character, a BOS in front: enough to count lengths the way TRL does."""

    eos_token = "</s>"

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1, *map(ord, t)] for t in texts]}


ROWS = [
    {"prompt": "p" * 30, "chosen": "c" * 5, "rejected": "r" * 5},  # fits: 1 + 30 + 5 + EOS = 37
    {"prompt": "p" * 30, "chosen": "c" * 20, "rejected": "r" * 5},  # the chosen answer is cut at 40
    {"prompt": "p" * 45, "chosen": "c", "rejected": "r"},  # the prompt alone fills 40: TRL drops it
]


def test_dropped_and_truncated_pairs_are_counted_as_trl_tokenizes_them() -> None:
    assert length_report(CharTokenizer(), ROWS, 40) == {"n": 3, "dropped": 1, "truncated": 1, "max_length": 40}
    assert length_report(CharTokenizer(), ROWS, 100) == {"n": 3, "dropped": 0, "truncated": 0, "max_length": 100}
    assert length_report(CharTokenizer(), [], 40)["n"] == 0


def test_the_launch_prints_both_splits_and_warns_past_a_tenth_dropped() -> None:
    lengths = {"train": {"n": 244, "dropped": 61, "truncated": 170, "max_length": 256},
               "test": {"n": 40, "dropped": 3, "truncated": 30, "max_length": 256}}  # fmt: skip
    lines = length_lines(lengths)
    assert lines[0] == (
        "  max_length 256: 61 of 244 train pairs dropped (the prompt alone fills it), 170 with an "
        "answer cut; 3 of 40 held-out pairs dropped (the prompt alone fills it), 30 with an answer cut"
    )
    assert len(lines) == 2 and "WARNING: data.max_length 256 leaves out 61 of 244 train pairs (25%" in lines[1]


def test_one_short_line_when_max_length_cuts_nothing() -> None:
    clean = {"train": {"n": 230, "dropped": 0, "truncated": 0, "max_length": 96},
             "test": {"n": 26, "dropped": 0, "truncated": 0, "max_length": 96}}  # fmt: skip
    assert length_lines(clean) == ["  max_length 96: no pair dropped, no answer cut"]
