"""Starting and stopping Ray for sweeper: loopback binding, quiet output, secrets kept out of runtime envs.

Light at import: ``ray`` is imported inside the functions. The Tune adapter (``sweeper.tune.raytune``), the
shared-reference step and the held-out evaluation on a cluster start Ray through here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any


def ray_env(local: bool = True) -> None:
    """Environment for Ray, set before it starts.

    - a local Ray binds 127.0.0.1 (our machines allow servers on loopback only; Ray otherwise binds the
      machine's network address, see ../shared/RECIPES.md); on a cluster this would make `ray start` and
      the driver refuse a second node, so it is set for local runs only;
    - no usage statistics are sent;
    - results may lack the sweep's metric: with evaluation on, train logs carry no ``eval_*`` value and
      eval logs no train value (the pruning scheduler skips results without its metric);
    - the experiment state (what `sweeper resume` restores) is saved at least every 5 s, not Ray's
      adaptive >= 10 s: a killed driver loses at most 5 s of bookkeeping;
    - Ray Tune's console output engine is the legacy one, which ``verbose=0`` silences: the new one prints
      its configuration box and a TensorBoard hint whatever the verbosity (sweeper prints its own lines).
    """
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def init_ray(address: str | None, num_cpus: int | None, verbose: bool) -> dict[str, float]:
    """Start a local Ray (bound to loopback) or connect to a cluster; return its resources."""
    ray_env(local=not address)
    import ray

    level = logging.INFO if verbose else logging.WARNING  # Ray's INFO lines only with --verbose
    logging.getLogger("ray.tune").setLevel(level)
    if address:
        ray.init(address=address, log_to_driver=verbose, logging_level=level)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose, logging_level=level)
    return dict(ray.cluster_resources())


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


SECRET_ENV = re.compile(r"(^AWS_|TOKEN|SECRET|PASSWORD|API_KEY)", re.IGNORECASE)


def keep_secrets_out_of_runtime_env() -> None:
    """Ray Tune copies the driver's AWS_* credentials into every trial's runtime_env, which Ray's runtime env
    agent then logs in plain text (runtime_env_agent.log). Stop that: a node takes credentials from its own
    environment (an instance profile / workload identity on a cluster), never from the driver through Ray."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # moved in a later Ray: tests/tune/test_secrets.py will say whether it still leaks
        return
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if names is not None:
        class_cache.ENV_VARS_TO_PROPAGATE = {n for n in names if not SECRET_ENV.search(n)}


def run_tasks(fn: Callable[[Any], Any], payloads: list[Any], address: str, cpus: float) -> list[Any]:
    """``fn(payload)`` for every payload as one Ray task each (a GPU each when the cluster has any), in order.

    ``address`` is a cluster's address, or ``"local"`` for a private local Ray (tests; a single machine).
    """
    local = address == "local"
    resources = init_ray(None if local else address, None, verbose=False)
    import ray

    try:
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        task = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=0)(fn)
        return ray.get([task.remote(p) for p in payloads])
    finally:
        shutdown_ray()
