"""Shared reference log-probs: the cache key and the on-disk cache, verified before use.

With ``model.reference: shared`` the reference model's log-probs of every chosen and rejected answer are
computed once per sweep (``sweeper.tune.refshare``, a Ray task; ``sweeper.train.reference`` does the forward passes)
and every trial reads them. They depend on the frozen base and the tokenized examples only, so the key is
a hash of exactly that: the model's files, the tokenizer's files, the chat template, the rendered rows,
``max_length`` (and TRL's truncation), the quantization, the compute dtype and the library versions that
shape the numbers. Any difference gives another key, hence a recomputation.

Layout: ``<root>/<key>/manifest.json`` (the key's components, row counts, the values file's sha256) and
``<root>/<key>/logps.json`` (``{"train": [[chosen, rejected] | null, ...], "eval": [...]}``, in row order;
null where TRL drops the row because its prompt fills ``max_length``). A cache whose file is missing,
truncated, edited or of the wrong shape is reported and ignored (then recomputed), never used.

Light module: no torch, no ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.records.files import publish_folder
from sweeper.records.versions import package_versions

CACHE_DIRNAME = "refcache"
MANIFEST_FILE = "manifest.json"
VALUES_FILE = "logps.json"
FORMAT = 1  # bump when the layout or what the values mean changes
# Library versions that change the reference numbers (kernels, quantization, tokenization, TRL's masking).
KEY_VERSIONS = ("torch", "transformers", "trl", "bitsandbytes", "tokenizers")
# Files of a model folder that are the tokenizer rather than the weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json")  # fmt: skip
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
# Files larger than this are fingerprinted by size plus their first and last MiB (weights: hashing 14 GB of
# safetensors at every launch would cost minutes); smaller ones by their full content.
FULL_HASH_BELOW = 64 * 1024 * 1024
EDGE = 1024 * 1024

Logps = list[list[float] | None]


class CorruptCache(Exception):
    """A cache folder that must not be used (the message says why)."""


@dataclass(frozen=True)
class CachedLogps:
    key: str
    path: Path
    train: Logps
    eval: Logps
    manifest: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------------------


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows_digest(train: list[dict[str, Any]], eval_rows: list[dict[str, Any]]) -> str:
    """The rendered rows (chat template already applied), in order: what the reference is run on."""
    fields = ("prompt", "chosen", "rejected")
    return sha256(canonical({"train": [[r[f] for f in fields] for r in train],
                             "eval": [[r[f] for f in fields] for r in eval_rows]}))  # fmt: skip


def file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        if size < FULL_HASH_BELOW:
            for block in iter(lambda: fh.read(EDGE), b""):
                h.update(block)
        else:
            h.update(fh.read(EDGE))
            fh.seek(size - EDGE)
            h.update(fh.read(EDGE))
    return h.hexdigest()


def folder_fingerprint(folder: Path, include: tuple[str, ...] | None = None,
                       exclude: tuple[str, ...] = ()) -> str:  # fmt: skip
    """sha256 over (relative name, file fingerprint) of the folder's files, or of ``include`` only."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name.startswith(".") or (include is not None and name not in include) or name in exclude:
            continue
        entries.append([name, file_fingerprint(path)])
    return sha256(canonical(entries))


def hub_snapshot(name: str, revision: str | None) -> Path | None:
    """The local Hugging Face cache's snapshot folder of a Hub model id, when it is there."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" /
               "huggingface")) / "hub")  # fmt: skip
    repo = hub / f"models--{name.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    folder = repo / "snapshots" / commit if commit else None
    return folder if folder is not None and folder.is_dir() else None


def chat_template_text(folder: Path) -> str | None:
    for name in TEMPLATE_FILES:
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else canonical(template).decode() if template else None
    return None


def model_components(resolved_path: str, revision: str | None) -> dict[str, Any]:
    """Fingerprints of the weights (and config), the tokenizer files and the chat template.

    A local folder (or the Hub cache's snapshot of a Hub id) is read; a Hub id that is not cached locally
    is keyed by its name and revision.
    """
    folder = Path(resolved_path)
    if not folder.is_dir():
        folder = hub_snapshot(resolved_path, revision) or folder
    if not folder.is_dir():
        ident = f"hub:{resolved_path}@{revision or 'main'}"
        return {"model": ident, "tokenizer": ident, "chat_template": ident}
    template = chat_template_text(folder)
    return {
        "model": folder_fingerprint(folder, exclude=TOKENIZER_FILES + TEMPLATE_FILES),
        "tokenizer": folder_fingerprint(folder, include=TOKENIZER_FILES),
        "chat_template": sha256(template.encode()) if template is not None else None,
    }


def dtype_of(training: dict[str, Any], gpus_per_trial: float) -> str:
    """The trial's compute dtype as sweeper.train.trial resolves it: bf16 if asked, else bf16 on GPUs, fp32 on CPU.

    ``bf16: null`` on a GPU is keyed "auto-gpu"; the precompute records the dtype it really used, and a
    trial whose own dtype differs does not use the values (sweeper.train.trial checks).
    """
    if training.get("bf16") is not None:
        return "bf16" if training["bf16"] else "fp32"
    return "auto-gpu" if gpus_per_trial > 0 else "fp32"


def signature(settings: dict[str, Any]) -> str:
    """The part of one trial's settings the reference depends on (trials that share it share the values)."""
    model, data, training = settings["model"], settings["data"], settings["training"]
    fields = {
        "name_or_path": model["name_or_path"],
        "revision": model["revision"],
        "quantization": model["quantization"],
        "bnb_4bit_quant_type": model["bnb_4bit_quant_type"] if model["quantization"] == "4bit" else None,
        "bnb_4bit_use_double_quant": model["bnb_4bit_use_double_quant"] if model["quantization"] == "4bit" else None,
        "max_length": data["max_length"],
        "bf16": training.get("bf16"),
    }
    return canonical(fields).decode()


def key_components(settings: dict[str, Any], model: dict[str, Any], rows: str, gpus_per_trial: float,
                   versions: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Everything the reference log-probs depend on, as plain data (stored in the manifest for the record)."""
    sig = json.loads(signature(settings))
    return {
        "format": FORMAT,
        **model,
        "name_or_path": sig["name_or_path"],
        "quantization": sig["quantization"],
        "bnb_4bit_quant_type": sig["bnb_4bit_quant_type"],
        "bnb_4bit_use_double_quant": sig["bnb_4bit_use_double_quant"],
        "dtype": dtype_of(settings["training"], gpus_per_trial),
        "data": rows,
        "max_length": sig["max_length"],
        "truncation_mode": "keep_start",  # TRL's default, which sweeper's trials use
        "versions": library_versions() if versions is None else versions,
    }


def cache_key(components: dict[str, Any]) -> str:
    return sha256(canonical(components))[:20]


def library_versions() -> dict[str, str]:
    return package_versions(KEY_VERSIONS, absent="absent")


# ---------------------------------------------------------------------------------------------
# The cache on disk
# ---------------------------------------------------------------------------------------------


def write_cache(root: Path, components: dict[str, Any], train: Logps, eval_logps: Logps,
                extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write ``root/<key>/`` atomically (staged beside it, then renamed) and return it."""
    key = cache_key(components)
    target = root / key
    root.mkdir(parents=True, exist_ok=True)
    values = canonical({"train": train, "eval": eval_logps})
    manifest = {
        "key": key,
        "components": components,
        "n_train": len(train),
        "n_eval": len(eval_logps),
        "n_missing": sum(v is None for v in [*train, *eval_logps]),
        "values_sha256": sha256(values),
        **(extra or {}),
    }
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        (staging / VALUES_FILE).write_bytes(values)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_folder(staging, target, replace=True)  # a corrupt earlier copy: replaced
    return target


def read_cache(folder: Path, key: str | None = None, n_train: int | None = None,
               n_eval: int | None = None) -> CachedLogps:  # fmt: skip
    """Read and verify a cache folder; raise CorruptCache (with the reason) rather than return bad values."""
    manifest_path, values_path = folder / MANIFEST_FILE, folder / VALUES_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        raw = values_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise CorruptCache(f"{folder}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict) or "values_sha256" not in manifest:
        raise CorruptCache(f"{folder}: {MANIFEST_FILE} is not a sweeper reference-cache manifest")
    expected = key or folder.name
    if manifest.get("key") != expected or cache_key(manifest.get("components", {})) != expected:
        raise CorruptCache(f"{folder}: manifest key {manifest.get('key')!r} does not match {expected!r}")
    if sha256(raw) != manifest["values_sha256"]:
        raise CorruptCache(f"{folder}: {VALUES_FILE} does not match the sha256 in its manifest (edited or truncated)")
    try:
        values = json.loads(raw)
    except ValueError as exc:
        raise CorruptCache(f"{folder}: {VALUES_FILE} is not JSON ({exc})") from None
    train, eval_logps = values.get("train"), values.get("eval")
    for name, rows, want in (("train", train, manifest.get("n_train")), ("eval", eval_logps, manifest.get("n_eval"))):
        if not isinstance(rows, list) or len(rows) != want:
            raise CorruptCache(f"{folder}: {name} has {_len(rows)} rows, the manifest says {want}")
        for row in rows:
            if row is not None and not (isinstance(row, list) and len(row) == 2
                                        and all(_finite(v) for v in row)):  # fmt: skip
                raise CorruptCache(f"{folder}: a {name} row is {row!r}, expected [chosen, rejected] floats or null")
    for name, rows, want in (("train", train, n_train), ("eval", eval_logps, n_eval)):
        if want is not None and len(rows) != want:
            raise CorruptCache(f"{folder}: {name} has {len(rows)} rows, this sweep has {want}")
    return CachedLogps(expected, folder, train, eval_logps, manifest)


def _len(rows: Any) -> Any:
    return len(rows) if isinstance(rows, list) else type(rows).__name__


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def search_roots(sweep_dir: Path, trials_dir: Path, cache_dir: Path | None) -> list[Path]:
    """Where a key is looked for, in order: this sweep, every other sweep under trials_dir, the user cache."""
    roots = [sweep_dir / CACHE_DIRNAME]
    if trials_dir.is_dir():
        roots += sorted(p / CACHE_DIRNAME for p in trials_dir.iterdir() if p.is_dir() and p != sweep_dir)
    if cache_dir is not None:
        roots.append(cache_dir / CACHE_DIRNAME)
    return roots


def find_cache(key: str, roots: list[Path], n_train: int, n_eval: int,
               warn: Any = None) -> CachedLogps | None:  # fmt: skip
    """The first valid cache of ``key`` under ``roots``; a corrupt one is reported through ``warn`` and skipped."""
    for root in roots:
        folder = root / key
        if not folder.exists():
            continue
        try:
            return read_cache(folder, key, n_train, n_eval)
        except CorruptCache as exc:
            if warn is not None:
                warn(f"reference cache ignored, recomputing: {exc}")
    return None


def copy_cache(found: CachedLogps, root: Path) -> Path:
    """Put a cache found elsewhere into this sweep's refcache/ too (the sweep's record stays self-contained)."""
    target = root / found.key
    if found.path.resolve() == target.resolve():
        return target
    extra = {k: v for k, v in found.manifest.items()
             if k not in ("key", "components", "n_train", "n_eval", "n_missing", "values_sha256")}  # fmt: skip
    extra["copied_from"] = str(found.path)
    return write_cache(root, found.manifest["components"], found.train, found.eval, extra)
