"""Shared reference log-probs, the pure parts: the cache key, its invalidation, and corrupt caches.

No torch, no training: hand-written values and folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sweeper.config.spec import parse_spec
from sweeper.plan import TrialSettings, compile_plan, resolve
from sweeper.records import refcache

ROWS = [{"prompt": f"[INST] q{i} [/INST]", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
VERSIONS = {"torch": "2.13.0", "transformers": "5.24.0", "trl": "1.16.0", "bitsandbytes": "0.50.2"}


def spec(**model: Any) -> Any:
    return parse_spec({"name": "t", "model": {"name_or_path": "builtin:tiny-mistral", **model},
                       "data": {"path": "builtin:synthetic", "max_length": 96}})  # fmt: skip


def model_folder(tmp_path: Path, template: str = "{{ bos_token }}") -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"hidden_size": 64}')
    (folder / "model.safetensors").write_bytes(b"\x00" * 1000)
    (folder / "tokenizer.json").write_text('{"vocab": {"a": 0}}')
    (folder / "chat_template.jinja").write_text(template)
    return folder


def key_of(settings: TrialSettings, folder: Path, rows: list[dict[str, str]] = ROWS, gpus: float = 0,
           versions: dict[str, str] = VERSIONS) -> str:  # fmt: skip
    components = refcache.key_components(settings.as_dict(), refcache.model_components(str(folder), None),
                                         refcache.rows_digest(rows[:4], rows[4:]), gpus, versions)  # fmt: skip
    return refcache.cache_key(components)


def test_the_key_is_stable_and_changes_with_every_component(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    base = resolve(spec(), {})
    key = key_of(base, folder)
    assert key == key_of(resolve(spec(), {}), folder)  # same inputs, same key (no time or path in it)
    # What the trial's reference does not depend on leaves the key alone: LoRA, learning rate, batch, beta.
    for params in ({"learning_rate": 1e-3}, {"per_device_train_batch_size": 2}, {"lora_r": 4}, {"beta": 0.3}):
        assert key_of(resolve(spec(), params), folder) == key
    changed = {
        "quantization": key_of(resolve(spec(), {"quantization": "8bit"}), folder),
        "max_length": key_of(resolve(spec(), {"max_length": 64}), folder),
        "dtype": key_of(resolve(spec(), {"bf16": True}), folder),
        "device (bf16 auto on a GPU)": key_of(base, folder, gpus=1),
        "data": key_of(base, folder, rows=[{**ROWS[0], "chosen": "better 0"}, *ROWS[1:]]),
        "train/eval split": key_of(base, folder, rows=ROWS[1:] + ROWS[:1]),
        "versions": key_of(base, folder, versions={**VERSIONS, "trl": "1.17.0"}),
        "double quantization": key_of(resolve(spec(bnb_4bit_use_double_quant=False), {}), folder),
    }
    (folder / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 999)
    changed["model weights"] = key_of(base, folder)
    model_folder(tmp_path)  # weights back
    (folder / "tokenizer.json").write_text('{"vocab": {"b": 0}}')
    changed["tokenizer"] = key_of(base, folder)
    model_folder(tmp_path, template="{{ messages }}")
    changed["chat template"] = key_of(base, folder)
    for what, other in changed.items():
        assert other != key, f"changing the {what} must change the key"
    assert len(set(changed.values())) == len(changed)


def test_components_name_what_changed(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    a = refcache.model_components(str(folder), None)
    model_folder(tmp_path, template="other")
    b = refcache.model_components(str(folder), None)
    assert a["model"] == b["model"] and a["tokenizer"] == b["tokenizer"]  # weights and tokenizer unchanged
    assert a["chat_template"] != b["chat_template"]
    # A Hub id that is not in the local cache is keyed by name and revision.
    hub = refcache.model_components("org/not-here-xyz", "abc123")
    assert hub["model"] == "hub:org/not-here-xyz@abc123"


def test_one_reference_per_quantization_and_none_for_other_modes() -> None:
    s = parse_spec({"name": "t", "model": {"name_or_path": "builtin:tiny-mistral", "reference": "shared"},
                    "data": {"path": "builtin:synthetic"},
                    "parameters": {"quantization": {"values": ["4bit", "8bit", "none"]},
                                   "learning_rate": {"values": [1e-3, 1e-4]}}})  # fmt: skip
    assert len(compile_plan(s).shared_references()) == 3  # 6 trials, 3 references: learning rate does not change it
    mixed = parse_spec({"name": "t", "model": {"name_or_path": "builtin:tiny-mistral"},
                        "data": {"path": "builtin:synthetic"},
                        "parameters": {"reference": {"values": ["adapter", "separate", "shared"]},
                                       "quantization": {"values": ["4bit", "8bit"]}}})  # fmt: skip
    assert len(compile_plan(mixed).trials) == 6
    assert len(compile_plan(mixed).shared_references()) == 2  # only the shared trials need one, one per quantization
    assert compile_plan(spec()).shared_references() == {}  # the default (adapter) computes nothing


def write(tmp_path: Path, components: dict[str, Any] | None = None) -> Path:
    components = components or {"format": 1, "model": "m", "data": "d"}
    train = [[-10.5, -12.25], None, [-3.0, -4.0]]
    return refcache.write_cache(tmp_path / "refcache", components, train, [[-1.0, -2.0]], {"dtype": "fp32"})


def test_a_written_cache_reads_back_exactly(tmp_path: Path) -> None:
    folder = write(tmp_path)
    found = refcache.read_cache(folder, n_train=3, n_eval=1)
    assert found.train == [[-10.5, -12.25], None, [-3.0, -4.0]] and found.eval == [[-1.0, -2.0]]
    assert found.manifest["dtype"] == "fp32" and found.manifest["n_missing"] == 1
    assert folder.name == refcache.cache_key({"format": 1, "model": "m", "data": "d"})
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def corrupt_values(folder: Path) -> None:
    text = (folder / refcache.VALUES_FILE).read_text()
    (folder / refcache.VALUES_FILE).write_text(text.replace("-10.5", "-10.25"))  # plausible, wrong


def truncate_values(folder: Path) -> None:
    raw = (folder / refcache.VALUES_FILE).read_bytes()
    (folder / refcache.VALUES_FILE).write_bytes(raw[: len(raw) // 2])


def drop_values(folder: Path) -> None:
    (folder / refcache.VALUES_FILE).unlink()


def bad_manifest(folder: Path) -> None:
    (folder / refcache.MANIFEST_FILE).write_text("{not json")


def shape_and_hash_edited(folder: Path) -> None:
    # Values edited *and* the hash updated to match: the row count in the manifest still catches it.
    values = {"train": [[-1.0, -2.0]], "eval": [[-1.0, -2.0]]}
    raw = refcache.canonical(values)
    (folder / refcache.VALUES_FILE).write_bytes(raw)
    manifest = json.loads((folder / refcache.MANIFEST_FILE).read_text())
    manifest["values_sha256"] = refcache.sha256(raw)
    (folder / refcache.MANIFEST_FILE).write_text(json.dumps(manifest))


def nan_inside(folder: Path) -> None:
    raw = refcache.canonical({"train": [[-1.0, -2.0], None, [None, 1.0]], "eval": [[-1.0, -2.0]]})
    (folder / refcache.VALUES_FILE).write_bytes(raw)
    manifest = json.loads((folder / refcache.MANIFEST_FILE).read_text())
    manifest["values_sha256"] = refcache.sha256(raw)
    (folder / refcache.MANIFEST_FILE).write_text(json.dumps(manifest))


def renamed_folder(folder: Path) -> None:
    folder.rename(folder.with_name("0" * 20))
    folder.with_name("0" * 20).rename(folder)  # back, but with another key's manifest inside:
    manifest = json.loads((folder / refcache.MANIFEST_FILE).read_text())
    manifest["components"]["model"] = "other"
    (folder / refcache.MANIFEST_FILE).write_text(json.dumps(manifest))


CORRUPTIONS = [corrupt_values, truncate_values, drop_values, bad_manifest, shape_and_hash_edited, nan_inside,
               renamed_folder]  # fmt: skip


@pytest.mark.parametrize("damage", CORRUPTIONS, ids=[f.__name__ for f in CORRUPTIONS])
def test_a_corrupt_cache_is_detected_never_used(tmp_path: Path, damage: Any) -> None:
    folder = write(tmp_path)
    damage(folder)
    with pytest.raises(refcache.CorruptCache):
        refcache.read_cache(folder, n_train=3, n_eval=1)
    warnings: list[str] = []
    assert refcache.find_cache(folder.name, [folder.parent], 3, 1, warn=warnings.append) is None
    assert len(warnings) == 1 and "recomputing" in warnings[0]
    # Rewriting the same key replaces the corrupt folder with a good one.
    again = write(tmp_path)
    assert again == folder and refcache.read_cache(again, n_train=3, n_eval=1).train[0] == [-10.5, -12.25]


def test_a_cache_for_other_rows_is_not_used(tmp_path: Path) -> None:
    folder = write(tmp_path)
    with pytest.raises(refcache.CorruptCache, match="this sweep has 4"):
        refcache.read_cache(folder, n_train=4, n_eval=1)


def test_lookup_order_this_sweep_then_other_sweeps_then_the_user_cache(tmp_path: Path) -> None:
    trials = tmp_path / "trials"
    (trials / "new").mkdir(parents=True)
    (trials / "older").mkdir()
    roots = refcache.search_roots(trials / "new", trials, tmp_path / "user")
    assert roots == [trials / "new" / "refcache", trials / "older" / "refcache", tmp_path / "user" / "refcache"]
    components = {"format": 1, "model": "m", "data": "d"}
    key = refcache.cache_key(components)
    assert refcache.find_cache(key, roots, 3, 1) is None  # nothing anywhere: compute
    refcache.write_cache(trials / "older" / "refcache", components, [[-1.0, -2.0]] * 3, [[0.0, -1.0]])
    found = refcache.find_cache(key, roots, 3, 1)  # a later sweep with the same key reuses an earlier sweep's
    assert found is not None and found.path == trials / "older" / "refcache" / key
    copied = refcache.copy_cache(found, trials / "new" / "refcache")
    assert refcache.read_cache(copied).manifest["copied_from"] == str(found.path)
    assert refcache.find_cache(key, roots, 3, 1).path == copied  # type: ignore[union-attr]
