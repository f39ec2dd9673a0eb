"""sweeper: DPO QLoRA hyperparameter sweeps on Ray Tune, pruned by Optuna."""

__version__ = "0.1.0"
