"""sweeper.train.tiny: the builtin tokenizer and model, built locally, cached atomically, loadable (also 4-bit)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sweeper.train import tiny
from sweeper.train.models import resolve_model

# Nothing may come from the Hugging Face Hub here (read when huggingface_hub is first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh SWEEPER_CACHE_DIR for this module, with the builtin model built into it once."""
    root = tmp_path_factory.mktemp("sweeper-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SWEEPER_CACHE_DIR", str(root))
        tiny.ensure_tiny_model()
        yield root


@pytest.fixture(scope="module")
def model_path(cache: Path) -> Path:
    return cache / "models" / "tiny-mistral-v1"


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(tmp_path))
    assert tiny.cache_dir() == tmp_path
    monkeypatch.delenv("SWEEPER_CACHE_DIR")
    assert tiny.cache_dir() == Path.home() / ".cache" / "sweeper"


def test_tokenizer_is_deterministic_and_mistral_like() -> None:
    tokenizer = tiny.build_tokenizer()
    assert tokenizer.get_vocab() == tiny.build_tokenizer().get_vocab()
    assert 800 <= len(tokenizer) <= 1000
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == ("<s>", "</s>", "<unk>")
    assert tokenizer.pad_token == "<pad>"
    ids = tokenizer("Please consult your doctor.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids  # BOS added, no EOS
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Please consult your doctor."
    assert len(ids) == 6  # whole words of the synthetic corpus are single tokens


def test_mistral_template_rejects_a_system_role() -> None:
    from jinja2 import TemplateError

    tokenizer = tiny.build_tokenizer("mistral")
    user = [{"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert rendered == "<s>[INST] Hi [/INST]"  # writes the BOS string itself, like Mistral-7B-Instruct-v0.2
    with pytest.raises(TemplateError, match="Conversation roles must alternate user/assistant/user/assistant/"):
        tokenizer.apply_chat_template([{"role": "system", "content": "Be nice."}, *user], tokenize=False)


def test_chatml_template_accepts_a_system_role() -> None:
    tokenizer = tiny.build_tokenizer("chatml")
    messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text=rendered)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["<s>", "<|im_start|>"]  # control tokens stay whole


def test_unknown_template_is_refused() -> None:
    with pytest.raises(ValueError, match="template must be one of"):
        tiny.build_tokenizer("llama3")


def test_model_build_is_deterministic() -> None:
    import torch

    tokenizer = tiny.build_tokenizer()
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first, second = tiny.build_tiny_model(tokenizer), tiny.build_tiny_model(tokenizer)
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's random state is untouched
    config = first.config
    shape = {key: getattr(config, key) for key in ("hidden_size", "intermediate_size", "num_hidden_layers")}
    heads = {key: getattr(config, key) for key in ("num_attention_heads", "num_key_value_heads")}
    assert shape == {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    assert heads == {"num_attention_heads": 4, "num_key_value_heads": 2}
    assert config.vocab_size == len(tokenizer)
    assert first.dtype == torch.float32
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_ensure_builds_once_then_hits_the_cache(cache: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["tiny-mistral-v1"]  # no staging left over
    weights = model_path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(tiny, "build_tokenizer", no_rebuild)
    assert tiny.ensure_tiny_model() == model_path
    assert resolve_model(tiny.BUILTIN_MODEL) == str(model_path)
    assert weights.stat().st_mtime_ns == mtime


def test_a_concurrent_build_that_finished_first_is_kept(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(tmp_path))
    target = tmp_path / "models" / "tiny-mistral-v1"
    real_build = tiny.build_tiny_model

    def build_while_another_process_wins(tokenizer: Any) -> Any:
        shutil.copytree(model_path, target)  # the other process renames its copy into place meanwhile
        (target / "theirs").touch()
        return real_build(tokenizer)

    monkeypatch.setattr(tiny, "build_tiny_model", build_while_another_process_wins)
    assert tiny.ensure_tiny_model() == target
    assert (target / "theirs").exists()  # their copy was kept, ours was not moved over it
    assert sorted(p.name for p in target.parent.iterdir()) == ["tiny-mistral-v1"]  # our staging copy is gone


def test_loads_with_auto_classes_offline(model_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    assert type(model).__name__ == "MistralForCausalLM"
    assert tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id  # the BOS post-processor survived saving
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False) == "<s>[INST] Hi [/INST]"
    inputs = tokenizer("Please consult your doctor.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))


def test_loads_in_4bit_on_cpu(model_path: Path) -> None:
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quantization)
    quantized = [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    assert "model.layers.0.self_attn.q_proj" in quantized


def test_builtin_names() -> None:
    assert (tiny.BUILTIN_MODEL, tiny.BUILTIN_DATA) == ("builtin:tiny-mistral", "builtin:synthetic")
