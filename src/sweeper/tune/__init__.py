"""The Ray Tune adapter: the only layer that imports ray.

Runs the plan's trials as Tune trials, asks the pruning gate after every result, shares reference log-probs,
and brings a cluster's records back to trials/<name>. ``ray`` itself is imported inside the functions.
"""

from __future__ import annotations

from sweeper.tune.cluster import copy_from_storage, experiment_path, max_failures
from sweeper.tune.raytune import check_resumable, resume_sweep, run_sweep
from sweeper.tune.refshare import shared_references
from sweeper.tune.runtime import init_ray, ray_env, shutdown_ray

__all__ = [
    "check_resumable",
    "copy_from_storage",
    "experiment_path",
    "init_ray",
    "max_failures",
    "ray_env",
    "resume_sweep",
    "run_sweep",
    "shared_references",
    "shutdown_ray",
]
