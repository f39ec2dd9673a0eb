"""Driver side of ``model.reference: shared``: find or compute each needed reference cache before the trials.

One cache per distinct reference (model, quantization, max_length, dtype: ``refcache.signature``) among the
sweep's trials: a sweep over quantization with ``shared`` gets one per quantization. Each is looked up
(this sweep's ``refcache/``, every other sweep under ``trials_dir``, ``$SWEEPER_CACHE_DIR/refcache``),
else computed by a Ray task with a trial's resources (1 GPU on a GPU cluster), written under
``trials/<name>/refcache/<key>/`` and handed to the trials through Ray's object store.

Imports ``ray`` (a plain remote task), never ``ray.tune``; torch only inside the task.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.plan.compile import SweepPlan
from sweeper.plan.settings import TrialSettings
from sweeper.records import refcache

Payload = dict[str, Any]  # {"key", "train", "eval", "dtype", "device"}: what a shared trial reads


def _precompute(settings: TrialSettings, train: list[dict], eval_rows: list[dict], cpus: float) -> dict[str, Any]:
    from sweeper.train.reference import compute_reference_logps

    return compute_reference_logps(settings, train, eval_rows, cpus)


def user_cache_dir() -> Path | None:
    configured = os.environ.get("SWEEPER_CACHE_DIR")
    return Path(configured).expanduser() if configured else None


def shared_references(plan: SweepPlan, train: list[dict], eval_rows: list[dict], trials_root: Path,
                      gpus_per_trial: float, say: Any = None) -> dict[str, Payload]:  # fmt: skip
    """Every shared reference the sweep needs, by reference group; computes the missing ones as Ray tasks."""
    say = say or (lambda text: print(text, file=sys.stdout, flush=True))
    spec = plan.spec
    wanted = plan.shared_references()
    if not wanted:
        return {}
    from sweeper.train.models import resolve_model

    sweep_dir = trials_root / spec.name
    root = sweep_dir / refcache.CACHE_DIRNAME
    model = refcache.model_components(resolve_model(spec.model.name_or_path), spec.model.revision)
    rows = refcache.rows_digest(train, eval_rows)
    roots = refcache.search_roots(sweep_dir, trials_root, user_cache_dir())
    out: dict[str, Payload] = {}
    pending: list[tuple[str, TrialSettings, dict[str, Any]]] = []
    for sig, settings in wanted.items():
        components = refcache.key_components(settings.as_dict(), model, rows, gpus_per_trial)
        key = refcache.cache_key(components)
        found = refcache.find_cache(key, roots, len(train), len(eval_rows), warn=say)
        if found is None:
            pending.append((sig, settings, components))
            continue
        refcache.copy_cache(found, root)
        say(f"Reference log-probs {key} ({settings.model.quantization}): reused from {found.path}")
        out[sig] = _payload(key, found.train, found.eval, found.manifest)
    if pending:
        import ray

        started = time.monotonic()
        cpus = spec.resources.cpus_per_trial
        task = ray.remote(_precompute).options(num_cpus=cpus, num_gpus=gpus_per_trial, max_retries=0)
        train_ref, eval_ref = ray.put(train), ray.put(eval_rows)
        futures = [task.remote(settings, train_ref, eval_ref, cpus) for _, settings, _ in pending]
        say(f"Computing reference log-probs once for the sweep ({len(pending)} task(s), "
            f"{len(train)} train + {len(eval_rows)} eval rows) ...")  # fmt: skip
        try:
            results = ray.get(futures)
        except Exception as exc:  # noqa: BLE001 - RayTaskError wraps whatever the task raised
            raise SweeperError(f"model.reference: shared: computing the reference log-probs failed ({exc}); "
                               "the traceback is above: fix it, or use model.reference: adapter") from exc  # fmt: skip
        for (sig, settings, components), result in zip(pending, results, strict=True):
            extra = {k: result[k] for k in ("dtype", "device", "seconds")}
            folder = refcache.write_cache(root, components, result["train"], result["eval"], extra)
            say(f"Reference log-probs {folder.name} ({settings.model.quantization}): computed in "
                f"{result['seconds']:.1f} s, cached in {folder}")  # fmt: skip
            out[sig] = _payload(folder.name, result["train"], result["eval"], extra)
        say(f"  reference precompute took {time.monotonic() - started:.1f} s of wall time")
    return out


def _payload(key: str, train: Any, eval_logps: Any, manifest: dict[str, Any]) -> Payload:
    return {"key": key, "train": train, "eval": eval_logps, "dtype": manifest.get("dtype"),
            "device": manifest.get("device")}  # fmt: skip
