"""The names of sweeper's own metrics in a trial's results: one place, the ``sweeper/`` prefix reserved for them.

TRL's names (``rewards/margins``, ``loss``, ``eval_...``) are never prefixed; ours always are, so they never
collide (Syne Tune reserves ``st_`` the same way). Light module: constants only.
"""

from __future__ import annotations

PREFIX = "sweeper/"

ATTEMPT = "sweeper/attempt"  # the attempt number (OOM retries count up)
BEST_METRIC = "sweeper/best_metric"  # early stopping: metric_for_best_model at the kept checkpoint
BEST_STEP = "sweeper/best_step"  # early stopping: the optimizer step of the kept (best) checkpoint
CUDA_MAX_ALLOCATED_MB = "sweeper/cuda_max_allocated_mb"
CUDA_MAX_RESERVED_MB = "sweeper/cuda_max_reserved_mb"
DEVICE = "sweeper/device"
DONE = "sweeper/done"  # 1 on a trial's final result after training ended
ELAPSED_S = "sweeper/elapsed_s"  # seconds since the trial started
EXAMPLES_SEEN = "sweeper/examples_seen"  # examples trained so far (the pruning axis)
GPU_NAME = "sweeper/gpu_name"
GRADIENT_ACCUMULATION_STEPS = "sweeper/gradient_accumulation_steps"
GUARD = "sweeper/guard"  # the margin-hacking guard's verdict so far
LOAD_S = "sweeper/load_s"
N_TRAIN_ROWS = "sweeper/n_train_rows"
NODE_ID = "sweeper/node_id"
NODE_IP = "sweeper/node_ip"
NVML_PEAK_USED_MB = "sweeper/nvml_peak_used_mb"
OOM = "sweeper/oom"  # 1 on the final result of a trial that never fit
PEAK_RSS_MB = "sweeper/peak_rss_mb"
PER_DEVICE_TRAIN_BATCH_SIZE = "sweeper/per_device_train_batch_size"
PREDICTED_PEAK_GB = "sweeper/predicted_peak_gb"
REFERENCE = "sweeper/reference"
RESUMED_AT_STEP = "sweeper/resumed_at_step"  # on every result after a paused trial resumed: the step it resumed from
STEP = "sweeper/step"  # the optimizer step of a result
TOKENS_SEEN = "sweeper/tokens_seen"  # tokens trained so far (TRL's num_tokens)
TORCH_THREADS = "sweeper/torch_threads"
TRAIN_S = "sweeper/train_s"
# sweeper's own fields on an Optuna trial and a Neptune run (not results)
STALE = "sweeper/stale"
SWEEP = "sweeper/sweep"
TRIAL_ID = "sweeper/trial_id"
STATUS = "sweeper/status"
