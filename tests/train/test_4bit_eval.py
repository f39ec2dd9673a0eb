"""Evaluating during 4-bit training must not change the training (bitsandbytes' CPU inference repack).

bitsandbytes 0.50, on CPUs with AVX512-BF16 (this machine's), repacks a Linear4bit's weights for its inference
kernel at the first eval-mode forward whose input needs no grad, after which no gradient flows back through
the layer and outputs move by ~6e-3. sweeper.train.hf.keep_4bit_on_the_training_path prevents it.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("torch")

import bitsandbytes as bnb  # noqa: E402
import torch  # noqa: E402
from bitsandbytes.functional import has_avx512bf16  # noqa: E402

from sweeper.config.spec import parse_spec  # noqa: E402
from sweeper.plan import resolve  # noqa: E402
from sweeper.train.hf import keep_4bit_on_the_training_path  # noqa: E402
from sweeper.train.trial import TrialJob, run_trial  # noqa: E402

from .test_trial import rows  # noqa: E402


def layer() -> Any:
    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 64, bias=False)
    quantized = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    quantized.load_state_dict(dense.state_dict())
    return quantized.to("cpu")  # quantizes the weights


def train_eval_train(module: Any) -> tuple[Any, Any, Any, Any]:
    """Input gradient and output of a training forward, before and after one eval forward, and the eval output."""
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))

    def train_step() -> tuple[Any, Any]:
        module.train()
        inp = x.clone().requires_grad_(True)
        out = module(inp)
        out.sum().backward()
        return inp.grad, out.detach()

    grad_before, out_before = train_step()
    module.eval()
    with torch.no_grad():
        evaluated = module(x)
    grad_after, out_after = train_step()
    return (grad_before, out_before), (grad_after, out_after), evaluated, x


def test_a_4bit_layer_still_trains_after_an_evaluation() -> None:
    module = layer()
    assert keep_4bit_on_the_training_path(module) == 1
    (grad_before, out_before), (grad_after, out_after), evaluated, _ = train_eval_train(module)
    assert grad_after is not None and torch.equal(grad_after, grad_before)  # the gradient still flows back
    assert torch.equal(out_after, out_before)  # training forwards are unchanged by the evaluation
    assert torch.equal(evaluated, out_before)  # and evaluation computes what training computes


@pytest.mark.skipif(not has_avx512bf16(), reason="the repack happens only on CPUs with AVX512-BF16")
def test_without_the_guard_the_evaluation_breaks_the_layer() -> None:
    # the defect itself, so that a bitsandbytes release that fixes it (or changes it) is noticed here
    (grad_before, _), (grad_after, out_after), evaluated, _ = train_eval_train(layer())
    assert grad_before is not None and grad_after is None


@pytest.mark.slow
def test_a_4bit_trial_with_evaluation_trains_as_one_without() -> None:
    def curve(eval_steps: int | None) -> list[float]:
        spec = parse_spec({
            "name": "t", "model": {"name_or_path": "builtin:tiny-mistral", "quantization": "4bit",
                                   "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
            "data": {"path": "builtin:synthetic", "max_length": 96},
            "training": {"per_device_train_batch_size": 4, "max_steps": 12, "learning_rate": 3e-3,
                         "logging_steps": 1, "eval_steps": eval_steps, "warmup_steps": 0},
        })  # fmt: skip
        logged: list[dict[str, Any]] = []
        data = rows(64)
        run_trial(TrialJob(resolve(spec, {}), data[:48], data[48:]), lambda m, c: logged.append(m))
        return [m["rewards/margins"] for m in logged if "rewards/margins" in m and not m.get("sweeper/done")]

    plain, evaluated = curve(None), curve(4)
    assert len(plain) == len(evaluated) == 12
    assert max(abs(a - b) for a, b in zip(plain, evaluated, strict=True)) < 1e-6, (plain, evaluated)
    assert plain[-1] > 0.1  # the margins moved: the comparison is not 0 == 0
