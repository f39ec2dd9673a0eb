"""How sure the held-out evidence is, from hand-made numbers: Wilson intervals, when rates are told apart, how many
pairs it would take, and the degeneration flag."""

from __future__ import annotations

import pytest

from sweeper.report import evalstats
from sweeper.report.evidence import Rate, degeneration, pairs_needed, wilson


def test_wilson_interval_matches_published_values() -> None:
    # Wilson 95%: 0/10 -> [0, 0.2775], 5/10 -> [0.2366, 0.7634], 28/40 -> [0.5457, 0.8193]
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(28, 40) == pytest.approx((0.5457, 0.8193), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_rates_are_told_apart_only_when_the_intervals_do_not_overlap() -> None:
    base, trial = Rate(11, 40), Rate(19, 40)  # 28% vs 48%: the real SmolLM2 sweep's numbers
    assert not trial.above(base)  # 20 points on 40 pairs is inside the noise
    assert Rate(38, 40).above(base)
    assert Rate.of(0.475, 40) == Rate(19, 40)
    assert Rate.of(None, 40) is None and Rate.of(0.5, 0) is None
    assert trial.text() == "48% [33–63%]"


def test_pairs_needed_is_the_smallest_size_that_separates_the_rates() -> None:
    n = pairs_needed(0.48, 0.28)
    assert n is not None and 40 < n < 200
    assert wilson(round(0.48 * n), n)[0] > wilson(round(0.28 * n), n)[1]
    assert wilson(round(0.48 * (n - 1)), n - 1)[0] <= wilson(round(0.28 * (n - 1)), n - 1)[1]
    assert pairs_needed(0.5, 0.5) is None
    assert pairs_needed(0.5, 0.5001) is None  # beyond MAX_PAIRS


def gen(repeat: float, distinct2: float) -> dict:
    return {"n": 4, "repeated_3gram": repeat, "distinct_2": distinct2}


def test_degenerate_samples_are_flagged_against_the_base() -> None:
    base = gen(0.07, 0.90)
    flag = degeneration(gen(0.63, 0.50), base)  # the lr 5e-4 SmolLM2 trial against its base
    assert flag is not None and "0.63" in flag and "0.07" in flag and "distinct-2 0.50" in flag
    assert degeneration(gen(0.10, 0.85), base) is None
    assert degeneration(gen(0.35, 0.88), gen(0.30, 0.90)) is None  # loops as much as the base does
    assert degeneration(gen(0.9, 0.1), None) is None and degeneration({"n": 0}, base) is None


def rec(rate: float, n: int = 40, margin: float = 0.0) -> dict:
    return {"status": "evaluated", "preference": {"n": n, "rate": rate, "margin_mean": margin}}


def test_the_verdict_says_within_noise_and_how_many_pairs_would_tell() -> None:
    a = evalstats.agreement("t1", {"t1": rec(0.475), "t2": rec(0.3)}, base=rec(0.275))
    assert a is not None and a.agrees and a.heldout_winner == "t1"
    line = evalstats.agreement_line(a)
    assert "agrees" in line and "48% [33–63%] of 40" in line
    assert "within noise" in line and "too small" in line
    assert f"about {pairs_needed(0.475, 0.275):,} held-out pairs" in line


def test_the_verdict_calls_a_gain_beyond_noise_and_a_leader_inside_it() -> None:
    a = evalstats.agreement("t1", {"t1": rec(0.85), "t2": rec(0.9, margin=2)}, base=rec(0.3))
    assert a is not None and a.agrees and a.heldout_winner == "t2"  # t2 leads, but inside t1's noise
    line = evalstats.agreement_line(a)
    assert "cannot tell" in line and "`t2` ▲" in line and "better beyond noise" in line


def test_final_levels_within_the_noise_are_a_tie() -> None:
    import random

    from sweeper.report.evidence import final_gap_sd

    rng = random.Random(0)
    a = [1.0 + rng.gauss(0, 0.5) for _ in range(30)]
    b = [0.9 + rng.gauss(0, 0.5) for _ in range(30)]
    sd = final_gap_sd(a, b)
    assert sd is not None and 0.2 < sd < 0.5  # two 5-value means of noise 0.5: sqrt(2/5) * 0.5 = 0.32
    assert final_gap_sd(a[:4], b) is None  # too short to estimate a curve's noise


def test_answers_that_shrink_to_a_few_tokens_are_flagged() -> None:
    base = {"n": 4, "repeated_3gram": 0.0, "distinct_2": 0.97, "n_tokens": 13.0}
    short = {"n": 4, "repeated_3gram": 0.0, "distinct_2": 1.0, "n_tokens": 6.25}  # the real lr 3e-4 SmolLM2 trials
    flag = degeneration(short, base)
    assert flag is not None and "answers of 6.25 tokens against the base's 13" in flag
    assert degeneration({**short, "n_tokens": 10.0}, base) is None
