"""Held-out evaluation without a model: rates from hand-written log-probs, generation statistics, the verdict's
agreement logic, the report section (golden file), multiple-choice sets and their one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sweeper.__main__ import main
from sweeper.config.spec import MultipleChoiceSet, parse_spec
from sweeper.data.mcq import answer_index, load_set
from sweeper.errors import DataError, SpecError
from sweeper.records import heldout
from sweeper.records.store import load_sweep, write_json
from sweeper.report import evalstats
from sweeper.report.markdown import render_report
from sweeper.report.summary import trials_frame

from ..conftest import FIXTURES
from .test_report import build_demo, check_golden

DATA = FIXTURES / "data"
MINIMAL = {"name": "t", "model": {"name_or_path": "m"}, "data": {"path": "d"}}


# ---------------------------------------------------------------------------------------------
# Rates and statistics from hand-written numbers
# ---------------------------------------------------------------------------------------------


def test_preference_rates_summed_per_token_and_against_the_reference() -> None:
    # (chosen sum, chosen tokens, rejected sum, rejected tokens) per held-out pair
    policy = [(-10.0, 10, -12.0, 10), (-20.0, 20, -12.0, 10), (-9.0, 3, -8.0, 4)]
    reference = [(-11.0, 10, -11.0, 10), (-19.0, 20, -13.0, 10), (-9.0, 3, -9.0, 4)]
    p = heldout.preference_metrics(policy, reference, beta=0.1)
    assert p["n"] == 3
    assert p["rate"] == pytest.approx(1 / 3)  # only the first pair has the larger summed log-prob for chosen
    # per token: -1 > -1.2, -1 > -1.2 (the long chosen answer loses only when summed), -3 < -2
    assert p["rate_norm"] == pytest.approx(2 / 3)
    assert p["margin_mean"] == pytest.approx((2 - 8 - 1) / 3)
    # implicit rewards (pi - ref): chosen +1 vs rejected -1; -1 vs +1; 0 vs +1 -> only the first ranks chosen first
    assert p["reward_accuracy"] == pytest.approx(1 / 3)
    assert p["reward_margin_mean"] == pytest.approx(0.1 * (2 - 2 - 1) / 3)
    base = heldout.preference_metrics(reference, None, beta=None)
    assert "reward_accuracy" not in base  # the base is its own reference
    assert heldout.preference_metrics([], None, None) == {"n": 0}


def test_choice_accuracy_summed_and_per_token() -> None:
    # question 1: the right option (0) is long: likelier per token, less likely summed
    scores = [[(-12.0, 6), (-8.0, 2)], [(-3.0, 3), (-9.0, 3), (-6.0, 3)]]
    m = heldout.choice_metrics(scores, answers=[0, 0])
    assert m["accuracy"] == 0.5 and m["accuracy_norm"] == 1.0
    assert m["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_length_and_repetition_of_generations() -> None:
    loop = "take more take more take more".split()
    assert heldout.distinct_n(loop, 1) == pytest.approx(2 / 6)
    assert heldout.distinct_n(loop, 2) == pytest.approx(2 / 5)  # (take more), (more take)
    assert heldout.repeated_ngram_ratio(loop, 3) == 1.0  # every trigram occurs twice
    fresh = "please consult your doctor first".split()
    assert heldout.distinct_n(fresh, 2) == 1.0 and heldout.repeated_ngram_ratio(fresh, 3) == 0.0
    assert heldout.distinct_n(["one"], 2) is None
    assert "\x17" not in evalstats.samples_text(
        "s", [{"prompt": "p"}], [("base", [{"answer": "a\x17b|c", "n_tokens": 3}])], 8, 0
    )
    g = heldout.generation_metrics([{"answer": "a b c", "n_tokens": 8}, {"answer": "", "n_tokens": 2}], 8)
    assert g["hit_cap"] == 0.5 and g["n_tokens"] == 5.0 and g["distinct_2"] == 1.0  # empty answers have no bigram


def rec(rate: float, margin: float = 0.0, n: int = 20) -> dict:
    return {"status": "evaluated", "preference": {"n": n, "rate": rate, "margin_mean": margin}}


def test_agreement_when_the_metric_winner_is_also_best_held_out() -> None:
    a = evalstats.agreement("t1", {"t1": rec(0.9), "t2": rec(0.7), "t3": None}, base=rec(0.5))
    assert a is not None and a.agrees and a.heldout_winner == "t1"
    line = evalstats.agreement_line(a)
    assert "agrees" in line and "90% [70–97%] of 20" in line and "base model (50% [30–70%])" in line


def test_disagreement_names_both_trials() -> None:
    a = evalstats.agreement("t1", {"t1": rec(0.3), "t2": rec(0.85)}, base=rec(0.5))
    assert a is not None and not a.agrees  # 30% [15-52%] lies wholly below 85% [64-95%]
    line = evalstats.agreement_line(a)
    assert line.startswith("⚠ Held-out evidence disagrees with the sweep metric")
    assert "`t1`" in line and "`t2` ▲" in line and "30%" in line and "85%" in line


def test_a_tie_on_the_rate_is_agreement_and_the_margin_breaks_ties_for_the_winner() -> None:
    evaluations = {"t1": rec(0.8, margin=1.0), "t2": rec(0.8, margin=3.0)}
    assert evalstats.heldout_winner(evaluations) == "t2"
    a = evalstats.agreement("t1", evaluations)
    assert a is not None and a.agrees  # the held-out set cannot tell them apart
    assert "cannot tell the metric's winner `t1`" in evalstats.agreement_line(a)


def test_a_winner_no_better_than_base_is_called_out() -> None:
    a = evalstats.agreement("t1", {"t1": rec(0.5)}, base=rec(0.55))
    assert a is not None and a.agrees
    assert "does no better than the base model" in evalstats.agreement_line(a)


def test_skipped_or_missing_records_give_no_agreement() -> None:
    skipped = {"status": "skipped", "reason": "pruned"}
    assert evalstats.agreement("t1", {"t1": skipped, "t2": rec(0.9)}) is None
    assert evalstats.agreement(None, {"t2": rec(0.9)}) is None
    assert evalstats.heldout_winner({"t1": skipped}) is None


# ---------------------------------------------------------------------------------------------
# The report: base as row zero, disagreement in the verdict (hand-made records, golden file)
# ---------------------------------------------------------------------------------------------


def mc(acc: float, norm: float) -> dict:
    return {"medqa": {"n": 50, "accuracy": acc, "accuracy_norm": norm, "chance": 0.25}}


def add_evaluations(root: Path) -> None:
    """The demo sweep's metric winner (aaaaa_00001, margins 0.9, flagged by the guard) does worse held out than
    the modest aaaaa_00005: the story the verdict must tell plainly."""

    def ev(rate: float, margin: float, reward: float, acc: float) -> dict:
        return {"status": "evaluated", "preference": {"n": 64, "rate": rate, "rate_norm": rate - 0.05,
                "margin_mean": margin, "reward_accuracy": reward}, "multiple_choice": mc(acc, acc + 0.02),
                "generation": {"n": 4, "n_tokens": 41.5, "distinct_2": 0.93}, "seconds": 52.0,
                "base": "base"}  # fmt: skip

    base = {**ev(0.5, 0.1, 0.0, 0.4), "label": "base", "samples": [{"answer": "x", "n_tokens": 1}]}
    del base["preference"]["reward_accuracy"]
    write_json(root / "evaluation_base.json", [base])
    write_json(root / "aaaaa_00000--lr=1e-05_ga=1" / "evaluation.json", ev(0.52, 0.2, 0.61, 0.4))
    write_json(root / "aaaaa_00001--lr=0.003_ga=2" / "evaluation.json", ev(0.55, 1.9, 0.7, 0.36))
    write_json(root / "aaaaa_00003--lr=0.0001_ga=1" / "evaluation.json",
               {"status": "skipped", "reason": "pruned at 16 examples: no finished adapter"})  # fmt: skip
    write_json(root / "aaaaa_00005--lr=1e-05_ga=2" / "evaluation.json", ev(0.8, 3.2, 0.83, 0.44))


def test_report_says_plainly_when_held_out_disagrees(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "trials" / "demo")
    add_evaluations(root)
    text = render_report(load_sweep(root))
    verdict = text.split("## Verdict")[1].split("## Trials")[0]
    assert ("⚠ Held-out evidence disagrees with the sweep metric: the held-out leader `aaaaa_00005` ▲ prefers the "
            "chosen answer on 80% [68–88%] of 64 held-out pairs, the metric's winner `aaaaa_00001` on 55% [43–66%] "
            "(95% intervals apart).") in verdict  # fmt: skip
    assert "Against the base model (50% [38–62%]) the gain is within noise" in verdict
    section = text.split("## Held-out evaluation")[1].split("\n## ")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    assert rows[0].startswith("| base | evaluated | 50% [38–62%] | - |")  # row zero: trials read as changes from it
    assert rows[2].startswith("| `aaaaa_00001` ★ | evaluated | 55% [43–66%] | +5 pts |")
    assert rows[4].startswith("| `aaaaa_00005` ▲ | evaluated | 80% [68–88%] | +30 pts |")
    assert "skipped: pruned at 16 examples" in rows[3]
    assert "| medqa acc (norm) |" in section and "chance medqa 25%" in section
    check_golden(text, FIXTURES / "golden" / "report_evaluated.md")
    frame = trials_frame(load_sweep(root))  # trials.csv carries the held-out figures too
    assert frame.set_index("trial_id")["heldout_pref_rate"].to_dict()["aaaaa_00005"] == 0.8


def test_an_unevaluated_sweep_renders_as_before(tmp_path: Path) -> None:
    text = render_report(load_sweep(build_demo(tmp_path / "trials" / "demo")))
    assert "Held-out" not in text


# ---------------------------------------------------------------------------------------------
# Multiple-choice sets: every mapping real sets need, and one-line errors before any model is loaded
# ---------------------------------------------------------------------------------------------


def test_answers_as_index_letter_or_text() -> None:
    options, letters = ["yes", "no", "maybe"], ["A", "B", "C"]
    assert [answer_index(v, options, letters) for v in (2, "2", "C", "c", "(C)", "C.", "Maybe")] == [2] * 7
    assert answer_index("3", ["1", "2", "3"], letters) == 2  # an option's own text before an index
    assert [answer_index(v, options, letters) for v in (3, "D", "perhaps", None, True, 1.5)] == [None] * 6


def test_the_shipped_fixture_maps_the_same_way_as_letters_and_as_columns() -> None:
    letters = load_set(MultipleChoiceSet(path=str(DATA / "mc_safety.jsonl")))
    columns = load_set(MultipleChoiceSet(path=str(DATA / "mc_safety_columns.jsonl"), question="q",
                                         options=["opa", "opb", "opc"], answer="cop"))  # fmt: skip
    assert letters == columns and len(letters) == 8
    assert all(it["options"][it["answer"]].startswith("Please") for it in letters)  # the cautious answer


def test_medqa_mapping_pubmedqa_fixed_options_and_context(tmp_path: Path) -> None:
    medqa = tmp_path / "medqa.jsonl"
    medqa.write_text('{"question": "Q?", "options": {"A": "x", "B": "y", "C": "z"}, "answer_idx": "C"}\n')
    assert load_set(MultipleChoiceSet(path=str(medqa), answer="answer_idx"))[0]["answer"] == 2
    pubmed = tmp_path / "pubmedqa.jsonl"
    pubmed.write_text('{"question": "Does it help?", "context": {"contexts": ["A trial.", "It helped."]}, '
                      '"final_decision": "yes"}\n')  # fmt: skip
    item = load_set(MultipleChoiceSet(path=str(pubmed), context="context", fixed_options=["yes", "no", "maybe"],
                                      answer="final_decision"))[0]  # fmt: skip
    assert item == {"question": "A trial. It helped.\n\nDoes it help?", "options": ["yes", "no", "maybe"], "answer": 0}


@pytest.mark.parametrize(("mapping", "expected"), [
    ({"path": str(DATA / "mc_safety.jsonl"), "question": "questoin"},
     "mc_safety.jsonl: evaluation.multiple_choice[0].question: no column 'questoin' (did you mean 'question'?)"),
    ({"path": str(DATA / "mc_empty.jsonl")}, "mc_empty.jsonl: evaluation.multiple_choice[0]: the set is empty"),
    ({"path": str(DATA / "mc_answer_not_an_option.jsonl")},
     "mc_answer_not_an_option.jsonl: row 1: answer 'D' (column 'answer') is not among the 3 options"),
    ({"path": str(DATA / "mc_safety_columns.jsonl"), "question": "q", "options": "opa", "answer": "cop"},
     "row 0: column 'opa' holds str, not a list of options: give one column per option"),
    ({"path": str(DATA / "nope.jsonl")}, "nope.jsonl: no such file"),
])  # fmt: skip
def test_bad_sets_give_one_line_errors(mapping: dict, expected: str) -> None:
    with pytest.raises(DataError) as info:
        load_set(MultipleChoiceSet(**mapping))
    assert len(str(info.value).splitlines()) == 1
    assert expected in str(info.value)


def test_evaluate_command_rejects_a_bad_config_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_demo(tmp_path / "trials" / "demo")
    (root / "data").mkdir()
    (root / "data" / "test.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    monkeypatch.setitem(sys.modules, "sweeper.train.evaluate", None)  # importing the model code would now fail
    cases = {
        "typo.yaml": ("evaluation:\n  n_sample: 2\n", "typo.yaml: evaluation.n_sample: unknown key"),
        "column.yaml": (f"multiple_choice:\n  - {{path: {DATA / 'mc_safety.jsonl'}, answer: correct}}\n",
                        "evaluation.multiple_choice[0].answer: no column 'correct'"),
        "answer.yaml": (f"multiple_choice:\n  - {{path: {DATA / 'mc_answer_not_an_option.jsonl'}}}\n",
                        "answer 'D' (column 'answer') is not among the 3 options"),
    }  # fmt: skip
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert main(["evaluate", str(root), "--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ERROR: ") and expected in err[0], err
    assert not list(root.glob("*/evaluation.json")) and not (root / "evaluation_base.json").exists()


def test_launch_rejects_a_bad_set_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nmodel: {name_or_path: builtin:tiny-mistral}\ndata: {path: builtin:synthetic}\n"
                    f"evaluation:\n  multiple_choice: [{{path: {DATA / 'mc_empty.jsonl'}}}]\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    assert main(["launch", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mc_empty.jsonl: evaluation.multiple_choice[0]: the set is empty" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no trials/, no reports/


def test_spec_section_defaults() -> None:
    ev = parse_spec({**MINIMAL, "evaluation": {}}).evaluation
    assert ev is not None and (ev.n_samples, ev.max_new_tokens, ev.top_k, ev.multiple_choice) == (4, 64, 3, [])
    assert parse_spec(MINIMAL).evaluation is None
    with pytest.raises(SpecError, match="evaluation: needs held-out rows"):
        parse_spec({**MINIMAL, "data": {"path": "d", "test_size": 0}, "evaluation": {}}, "s.yaml")


def test_a_pair_with_no_answer_token_left_is_neither_win_nor_loss() -> None:
    # the prompt alone filled max_length: both answers score 0 over 0 tokens (it used to count as "not preferred")
    policy = [(-10.0, 10, -12.0, 10), (-20.0, 20, -12.0, 10), (0.0, 0, 0.0, 0), (0.0, 0, 0.0, 0)]
    reference = [(-11.0, 10, -11.0, 10), (-19.0, 20, -13.0, 10), (0.0, 0, 0.0, 0), (0.0, 0, 0.0, 0)]
    p = heldout.preference_metrics(policy, reference, beta=0.1)
    assert (p["n"], p["n_unscorable"]) == (2, 2)
    assert p["rate"] == 0.5  # 1 of the 2 scorable pairs, not 1 of 4
    assert p["reward_accuracy"] == 0.5  # pair 0: +2 vs the reference; pair 1: -2
    assert heldout.preference_metrics([(0.0, 0, 0.0, 0)], None, None) == {"n": 0, "n_unscorable": 1}


def test_a_winner_whose_samples_loop_is_flagged_like_a_guard_finding(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "trials" / "demo")
    add_evaluations(root)
    winner = root / "aaaaa_00001--lr=0.003_ga=2" / "evaluation.json"
    record = {**__import__("json").loads(winner.read_text()),
              "generation": {"n": 4, "n_tokens": 48.0, "distinct_2": 0.5, "repeated_3gram": 0.63}}  # fmt: skip
    write_json(winner, record)
    base = __import__("json").loads((root / "evaluation_base.json").read_text())
    base[0]["generation"] = {"n": 4, "n_tokens": 40.0, "distinct_2": 0.9, "repeated_3gram": 0.07}
    write_json(root / "evaluation_base.json", base)
    text = render_report(load_sweep(root))
    verdict = text.split("## Verdict")[1].split("## Trials")[0]
    assert "- ⚠ degenerate samples: repeated word trigrams 0.63 against the base's 0.07" in verdict
    section = text.split("## Held-out evaluation")[1]
    assert "| 0.5 ⚠ |" in section and "1 trial(s) whose greedy samples degenerate" in section


def test_samples_of_the_random_builtin_model_say_so() -> None:
    models = [("base", [{"answer": "x y", "n_tokens": 2}])]
    assert "**random** tiny model" in evalstats.samples_text("s", [{"prompt": "p"}], models, 8, 0, random_model=True)
    assert "random" not in evalstats.samples_text("s", [{"prompt": "p"}], models, 8, 0)
