"""``model.reference: shared`` trains like ``adapter`` and ``separate``, without the reference forward.

Real tiny 4-bit trials on CPU, same seed and data: the logged rewards, margins and loss of the three modes
agree to tolerance, the shared trial runs the base model once per micro-batch (the adapter trial twice),
and the precomputed values survive the cache round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from transformers import AutoTokenizer, TrainerCallback  # noqa: E402

from sweeper.config.spec import parse_spec  # noqa: E402
from sweeper.data.rows import format_rows, make_prompt_renderer, validate_rows  # noqa: E402
from sweeper.data.synthetic import synthetic_preference_rows  # noqa: E402
from sweeper.plan import resolve  # noqa: E402
from sweeper.records import refcache  # noqa: E402
from sweeper.train.reference import compute_reference_logps  # noqa: E402
from sweeper.train.tiny import ensure_tiny_model  # noqa: E402
from sweeper.train.trial import TrialJob, run_trial  # noqa: E402

pytestmark = pytest.mark.slow

COMPARED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "eval_loss", "eval_rewards/margins",
            "eval_rewards/chosen")  # fmt: skip
# fp32 on CPU, 4-bit: the reference run inside a trial (adapter disabled, training forward) and the precompute
# (eval, no grad) go through the same bitsandbytes kernel and differ by float rounding only: 2.2e-6 in rewards
# after 4 steps, where the margins reach ~0.06. (Before bitsandbytes' CPU inference repack was prevented, the
# precompute ran another kernel: 1e-4 apart, and margins -7.6e-5 at step 1, where policy == reference.)
ATOL = 1e-5


class CountBaseForwards(TrainerCallback):
    """Counts forward calls of the decoder (policy and, in adapter mode, the reference through the same model)."""

    def __init__(self) -> None:
        self.calls = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        model.get_base_model().model.register_forward_pre_hook(self._count)

    def _count(self, module: Any, inputs: Any) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def rows() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_model())
    valid, _ = validate_rows(synthetic_preference_rows(40), "orca")
    formatted = format_rows(valid, "orca", make_prompt_renderer(tokenizer))
    return formatted[:32], formatted[32:]


def settings(reference: str, quantization: str = "4bit") -> dict[str, Any]:
    spec = parse_spec({
        "name": "t", "model": {"name_or_path": "builtin:tiny-mistral", "quantization": quantization,
                               "reference": reference, "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
        "data": {"path": "builtin:synthetic", "max_length": 96},
        "training": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_steps": 4,
                     "learning_rate": 3e-3, "logging_steps": 1, "eval_steps": 2, "warmup_steps": 0},
    })  # fmt: skip
    return resolve(spec, {})


def train(mode: str, rows: Any, refs: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
    logged: list[dict[str, Any]] = []
    counter = CountBaseForwards()
    run_trial(TrialJob(settings(mode), rows[0], rows[1], ref_logps=refs), lambda m, c: logged.append(m), [counter])
    return logged[:-1], counter.calls  # the last report is the final summary


@pytest.fixture(scope="module")
def shared_refs(rows: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Computed once, written to a cache and read back, as a sweep does."""
    computed = compute_reference_logps(settings("shared"), rows[0], rows[1])
    root = tmp_path_factory.mktemp("refcache")
    folder = refcache.write_cache(root, {"format": 1, "test": True}, computed["train"], computed["eval"],
                                  {"dtype": computed["dtype"], "device": computed["device"]})  # fmt: skip
    found = refcache.read_cache(folder, n_train=len(rows[0]), n_eval=len(rows[1]))
    assert found.train == computed["train"]  # exact round trip through JSON
    return {"train": found.train, "eval": found.eval, "dtype": found.manifest["dtype"],
            "device": found.manifest["device"]}  # fmt: skip


def test_precompute_covers_every_row_in_order(rows: Any, shared_refs: dict[str, Any]) -> None:
    assert len(shared_refs["train"]) == 32 and len(shared_refs["eval"]) == 8
    assert all(v is not None and v[0] < 0 and v[1] < 0 for v in shared_refs["train"] + shared_refs["eval"])
    assert len({tuple(v) for v in shared_refs["train"]}) == 32  # one value per row, not a broadcast
    assert shared_refs["dtype"] == "fp32" and shared_refs["device"] == "cpu"


def test_shared_matches_adapter_and_separate_without_the_reference_forward(
    rows: Any, shared_refs: dict[str, Any]
) -> None:
    adapter, adapter_calls = train("adapter", rows)
    shared, shared_calls = train("shared", rows, shared_refs)
    separate, separate_calls = train("separate", rows)
    assert [m["sweeper/step"] for m in shared] == [m["sweeper/step"] for m in adapter]
    assert len(adapter) == 6  # 4 train logs + 2 evaluations
    for a, s, p in zip(adapter, shared, separate, strict=True):
        for key in COMPARED:
            if key in a:
                assert s[key] == pytest.approx(a[key], abs=ATOL), (key, a["sweeper/step"])
                assert p[key] == pytest.approx(a[key], abs=ATOL), (key, a["sweeper/step"])
    assert shared[0]["rewards/margins"] == adapter[0]["rewards/margins"] == 0.0  # step 1: policy == reference
    last = [m for m in adapter if "rewards/margins" in m][-1]
    assert last["rewards/margins"] > 20 * ATOL  # the margins moved: the comparison is not 0 == 0
    # 4 steps x 2 micro-batches + 2 evaluations x 4 eval batches (8 rows, batch 2) = 16 policy forwards.
    assert shared_calls == 16  # TRL did not run the reference: it read the shared columns
    assert separate_calls == 16  # the reference ran on the second copy
    assert adapter_calls == 32  # every policy forward had a reference forward through the same model


def test_shared_refuses_values_computed_in_another_dtype(rows: Any, shared_refs: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="computed in bf16"):
        run_trial(
            TrialJob(settings("shared"), rows[0], rows[1], ref_logps={**shared_refs, "dtype": "bf16"}),
            lambda m, c: None,
        )
    with pytest.raises(RuntimeError, match="no shared reference"):
        run_trial(TrialJob(settings("shared"), rows[0], rows[1]), lambda m, c: None)


def test_a_corrupt_value_changes_the_rewards(rows: Any, shared_refs: dict[str, Any], tmp_path: Path) -> None:
    """The trial really uses the shared values: shifting one row's reference shifts the first logged rewards."""
    shifted = [[c + 5.0, r] for c, r in shared_refs["train"]]
    logged, _ = train("shared", rows, {**shared_refs, "train": shifted})
    baseline, _ = train("shared", rows, shared_refs)
    # rewards/chosen = beta * (policy - reference): 5 nats lower reference -> 0.1 * 5 = 0.5 higher rewards
    assert logged[0]["rewards/chosen"] == pytest.approx(baseline[0]["rewards/chosen"] - 0.5, abs=1e-4)
