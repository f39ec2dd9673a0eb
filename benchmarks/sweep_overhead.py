"""P3: wall time of a 4-trial sweep ÷ the sum of the same 4 trials run as standalone plain TRL scripts.

    PYTHONPATH=src python benchmarks/sweep_overhead.py [--repeats 3] [--variants c2 c2-reuse c1-reuse]

The 4 trials are the smoke grid (learning rate 1e-5 / 3e-3 × accumulation 1 / 2, 24 steps, batch 4,
4-bit, 1 thread each). Standalone: ``python benchmarks/plain_trl.py`` once per config, one after the
other, wall time of each process (Python start, imports, model load, training) summed. Sweep:
``python -m sweeper launch`` of the same grid, wall time of the whole command (Python start, data
preparation, Ray start, trials, report). Variants (resources in the spec):
  c2          max_concurrent_trials 2, a fresh worker process per trial (the default)
  c2-reuse    max_concurrent_trials 2, reuse_actors: true
  c1-reuse    max_concurrent_trials 1, reuse_actors: true (no parallelism: overhead alone)
  c2-shared   c2-reuse with model.reference: shared (adds the once-per-sweep precompute task)
Each repeat runs the standalone set and every variant in a rotating order; medians of the repeats.
With 2 trials at a time on a 2-core machine a sweep can beat the *sum* of standalone runs by running two
at once: the c1 variant is the like-for-like overhead figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _common import CONFIG, ROOT, fmt, median, rows  # isort: skip

GRID = [(lr, ga) for lr in (1e-5, 3e-3) for ga in (1, 2)]
VARIANTS = {
    "c2": {"max_concurrent_trials": 2, "reuse_actors": False},
    "c2-reuse": {"max_concurrent_trials": 2, "reuse_actors": True},
    "c1-reuse": {"max_concurrent_trials": 1, "reuse_actors": True},
    "c2-shared": {"max_concurrent_trials": 2, "reuse_actors": True, "reference": "shared"},
}


def spec_text(variant: dict[str, object], name: str) -> str:
    spec = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    spec["name"] = name
    spec["training"].update(max_steps=CONFIG["max_steps"], logging_steps=CONFIG["logging_steps"],
                            per_device_train_batch_size=CONFIG["per_device_train_batch_size"])  # fmt: skip
    spec["model"]["lora"] = CONFIG["lora"]
    resources = {k: v for k, v in variant.items() if k != "reference"}
    spec["resources"].update(resources)
    if "reference" in variant:
        spec["model"]["reference"] = variant["reference"]
    return yaml.safe_dump(spec)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["c2", "c2-reuse", "c1-reuse"], choices=list(VARIANTS))
    a = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")]),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sweeper-p3-") as tmp:
        work = Path(tmp)
        train_rows, _ = rows()
        (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
        for name, variant in VARIANTS.items():
            (work / f"{name}.yaml").write_text(spec_text(variant, f"p3-{name}"))
        names = ["standalone", *a.variants]
        results: dict[str, list[float]] = {n: [] for n in names}
        for r in range(a.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                if name == "standalone":
                    results[name].append(sum(
                        timed([sys.executable, str(ROOT / "benchmarks" / "plain_trl.py"), "rows.jsonl",
                               "--learning-rate", str(lr), "--gradient-accumulation-steps", str(ga)], work, env)
                        for lr, ga in GRID))  # fmt: skip
                else:
                    results[name].append(timed([sys.executable, "-m", "sweeper", "launch", f"{name}.yaml"], work, env))
                print(f"  repeat {r + 1}: {name} {results[name][-1]:.1f} s", flush=True)
    print(f"P3 wall time, s (4 trials x {CONFIG['max_steps']} steps, {a.repeats} repeats, rotating order)")
    for name in names:
        print(f"  {name:11s} {fmt(results[name])}")
    for name in a.variants:
        per = [s / t for s, t in zip(results[name], results["standalone"], strict=True)]
        print(f"P3 sweep {name} / sum of standalone: {median(results[name]) / median(results['standalone']):.3f} "
              f"(ratio of medians), {median(per):.3f} (median of per-repeat ratios)")  # fmt: skip


if __name__ == "__main__":
    main()
