"""Sweep specs: YAML in, validated pydantic models out.

The layout follows W&B Sweeps (``name``, ``method``, ``metric``, ``parameters``, ``run_cap``,
``early_terminate``) plus sweeper's own sections (``model``, ``data``, ``training``, ``resources``,
``output``). Parameter and field names are TRL ``DPOConfig`` / ``TrainingArguments`` names verbatim.

Validation happens once, here; every problem becomes one line ``file: dotted.key: message``.
Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from sweeper.config.specerrors import did_you_mean, format_errors, kind, message
from sweeper.errors import SpecError

Scalar = float | int | str | bool

# ---------------------------------------------------------------------------------------------
# Known values, checked here so a typo fails before anything heavy is imported.
# ---------------------------------------------------------------------------------------------

LR_SCHEDULER_TYPES = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
)  # fmt: skip
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop",
    "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit",
    "lion_8bit", "lion_32bit", "paged_lion_32bit", "paged_lion_8bit",
)  # fmt: skip
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm",
)  # fmt: skip


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# sweeper sections
# ---------------------------------------------------------------------------------------------


class LoraSection(_Section):
    r: Annotated[int, Field(gt=0, description="LoRA rank")] = 16
    lora_alpha: Annotated[float, Field(gt=0, description="LoRA scaling numerator (alpha / r)")] = 32
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    # "all-linear" is PEFT's shorthand for every linear layer but the output head (QLoRA paper setup).
    target_modules: str | list[str] = "all-linear"


class ModelSection(_Section):
    # A Hub id (mistralai/Mistral-7B-Instruct-v0.2), a local folder, or builtin:tiny-mistral.
    name_or_path: Annotated[str, Field(min_length=1)]
    revision: str | None = None
    # 4bit = bitsandbytes nf4 (QLoRA); 8bit = LLM.int8; none = plain LoRA on the 16/32-bit base.
    quantization: Literal["4bit", "8bit", "none"] = "4bit"
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_use_double_quant: bool = True
    # Where DPO's reference log-probs come from. adapter: the base with the LoRA adapter disabled (no second copy,
    # one extra forward per step); separate: a second quantized copy of the base (the seed's setup, ~2x weights);
    # shared: computed once per sweep (a Ray task before the trials, cached under trials/<name>/refcache/) and
    # read by every trial, which then skips the reference forward. All three give the same rewards.
    reference: Literal["adapter", "separate", "shared"] = "adapter"
    trust_remote_code: bool = False
    # transformers' attn_implementation: eager keeps heads x seq^2 attention probabilities for backward (the
    # memory estimate counts them), sdpa and flash_attention_2 (CUDA GPUs only) do not; None = transformers'
    # default (sdpa where torch has it).
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None
    lora: LoraSection = LoraSection()


class DataSection(_Section):
    # A Hub dataset id (Intel/orca_dpo_pairs), a local .json/.jsonl/.parquet file, builtin:synthetic or
    # builtin:orca_dpo_pairs (284 real rows shipped with sweeper).
    path: Annotated[str, Field(min_length=1)]
    # auto: detected from the columns and printed (README: Data formats); or one of the formats by name.
    format: Literal["auto", "orca", "prompt_chosen_rejected", "conversational", "implicit_prompt", "hh_rlhf",
                    "llamafactory_messages", "sharegpt", "alpaca"] = "auto"  # fmt: skip
    # The format's column names mapped onto the file's: {prompt: instruction_text, chosen: good, rejected: bad}.
    columns: dict[str, Annotated[str, Field(min_length=1)]] = {}
    # The Hub dataset's configuration name (datasets.load_dataset(path, name)); None = its default.
    name: str | None = None
    split: str = "train"
    # Held-out rows: a fraction (< 1) or a count (>= 1); 0 keeps every row for training.
    test_size: Annotated[float, Field(ge=0)] = 0.1
    # DPOConfig.max_length: prompt + completion tokens; longer sequences are truncated.
    max_length: Annotated[int, Field(gt=0)] = 1024
    # Use only the first rows after shuffling (quick looks at a big set); None = all.
    max_rows: Annotated[int, Field(gt=0)] | None = None


class TrainingSection(_Section):
    """Fixed DPOConfig fields; any of them can be swept under ``parameters`` instead."""

    per_device_train_batch_size: Annotated[int, Field(gt=0)] = 8
    # Used to reach a larger effective batch than fits in memory.
    gradient_accumulation_steps: Annotated[int, Field(gt=0)] = 1
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-5
    # DPO temperature: higher keeps the policy closer to the reference.
    beta: Annotated[float, Field(gt=0)] = 0.1
    loss_type: str = "sigmoid"
    num_train_epochs: Annotated[float, Field(gt=0)] = 1.0
    # -1 trains for num_train_epochs; a positive value stops after that many optimizer steps.
    max_steps: Annotated[int, Field(ge=-1)] = -1
    lr_scheduler_type: str = "cosine"
    optim: str = "paged_adamw_32bit"
    # A float < 1 is a fraction of all steps (transformers 5 dropped warmup_ratio).
    warmup_steps: Annotated[float, Field(ge=0)] = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    # Dense logs give the pruner a curve to read; TRL's default of 10 is too sparse for short trials.
    logging_steps: Annotated[int, Field(gt=0)] = 1
    # Evaluate on the held-out split every N steps (adds eval_* metrics); None = no evaluation.
    eval_steps: Annotated[int, Field(gt=0)] | None = None
    gradient_checkpointing: bool = True
    # Early stopping on held-out evaluation (transformers' EarlyStoppingCallback): a trial, the leader included,
    # ends after this many evaluations without improving metric_for_best_model by early_stopping_threshold, and
    # keeps its best checkpoint (load_best_model_at_end). Needs eval_steps. None = off.
    # TRL's memory options, passed to DPOConfig as named: Liger's fused kernels (CUDA and the liger-kernel package),
    # padding-free batches (flash_attention_2 only), TRL's own reference precompute in every trial.
    use_liger_kernel: bool = False
    padding_free: bool = False
    precompute_ref_log_probs: bool = False
    early_stopping_patience: Annotated[int, Field(gt=0)] | None = None
    early_stopping_threshold: Annotated[float, Field(ge=0)] = 0.0
    metric_for_best_model: str = "eval_rewards/margins"
    greater_is_better: bool = True
    # None = bf16 where the GPU supports it, fp32 on CPU.
    bf16: bool | None = None
    seed: int = 42

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        return _one_of(value, LR_SCHEDULER_TYPES)

    @field_validator("optim")
    @classmethod
    def _known_optim(cls, value: str) -> str:
        return _one_of(value, OPTIMIZERS)

    @field_validator("loss_type")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        return _one_of(value, LOSS_TYPES)


class ResourcesSection(_Section):
    cpus_per_trial: Annotated[float, Field(gt=0)] = 1
    # None = 1 GPU per trial when the Ray cluster has GPUs, else 0. Multi-GPU trials are not supported.
    gpus_per_trial: Annotated[float, Field(ge=0, le=1)] | None = None
    # None = as many as the resources allow.
    max_concurrent_trials: Annotated[int, Field(gt=0)] | None = None
    # Run later trials in the worker process of a finished one (Ray Tune reuse_actors): saves each trial's
    # Python start and torch/transformers/TRL imports (~5-13 s on our 2-core machines). Every trial still loads
    # its own model; threads, CUDA caches, paged buffers and the peak-memory counters are reset between trials.
    reuse_actors: bool = False
    # CPUs of the local Ray instance started by launch (ignored with --address); None = all.
    num_cpus: Annotated[int, Field(gt=0)] | None = None
    # Memory of one GPU, for the preflight (sweeper.plan.estimate): trials predicted above it are flagged or skipped.
    # 80 = the A100/H100 80 GB cards the seed grid ran on; GB as nvidia-smi counts them (GiB).
    gpu_memory_gb: Annotated[float, Field(gt=0)] = 80
    # warn: list over-budget trials and run them anyway (the estimate is approximate); skip: leave them out
    # before Ray starts and record them in trials/<name>/infeasible.json.
    preflight: Literal["warn", "skip"] = "warn"
    # retry_halved: an out-of-memory trial reruns with half the per-device batch and twice the accumulation
    # (same effective batch, unlike HF's auto_find_batch_size), down to batch 1; fail: it ends with status oom.
    oom: Literal["retry_halved", "fail"] = "retry_halved"
    # Price of one GPU-hour for the dry-run's cost line; 2.0 is a round on-demand A100 80 GB cloud price
    # (an assumption, not a quote: set your own).
    gpu_hour_usd: Annotated[float, Field(ge=0)] = 2.0
    # Training throughput of one GPU in DPO examples per second, for the GPU-hours line; None = measured in
    # earlier trials of this sweep, else scaled from the seed (~1 example/s for Mistral-7B at max_length 1536).
    examples_per_gpu_second: Annotated[float, Field(gt=0)] | None = None
    # Ray's FailureConfig.max_failures: how often a trial whose worker or node died (or that raised) is rerun,
    # from scratch (the adapter is the only checkpoint). None = 2 on a cluster (--address: nodes get lost),
    # 0 locally (an error there is a bug to see at once, not to repeat).
    max_failures: Annotated[int, Field(ge=-1)] | None = None


class OutputSection(_Section):
    trials_dir: str = "trials"
    reports_dir: str = "reports"
    # Ray's storage_path while the sweep runs: a folder every node mounts at the same path (NFS), or a URI Ray
    # supports (s3://bucket/sweeps, gs://..., abfs://...). None = trials_dir (one machine, or trials_dir shared).
    # Trial folders are copied from it into trials_dir/<name> at the end of launch and resume.
    storage: Annotated[str, Field(min_length=1)] | None = None


class NeptuneSection(_Section):
    # workspace/project; the API token comes from NEPTUNE_API_TOKEN only and is never written anywhere.
    project: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    # async: stream to the server; offline: write under trials/<name>/neptune for `neptune sync`; debug: nothing.
    mode: Literal["async", "offline", "debug"] = "async"
    tags: list[Annotated[str, Field(min_length=1, max_length=128)]] = []


class TrackingSection(_Section):
    """Experiment trackers beside the local one (trials/<name>/tracking.jsonl, always on)."""

    neptune: NeptuneSection | None = None


class MultipleChoiceSet(_Section):
    """A question / options / answer set scored by log-likelihood (base vs trials); column names are the set's own."""

    # A Hub dataset id (cais/mmlu, openlifescienceai/medmcqa, GBaker/MedQA-USMLE-4-options, qiaojin/PubMedQA)
    # or a local .jsonl/.json/.parquet file.
    path: Annotated[str, Field(min_length=1)]
    # The Hub dataset's configuration (cais/mmlu: clinical_knowledge; qiaojin/PubMedQA: pqa_labeled).
    subset: str | None = None
    split: str = "test"
    # Label in the report; None = the file name or Hub id (and subset).
    name: str | None = None
    question: Annotated[str, Field(min_length=1)] = "question"
    # Column with a passage shown before the question (PubMedQA: context); None = no passage.
    context: str | None = None
    # One column holding the options (a list, or a {letter: text} mapping as in MedQA), or several columns with
    # one option each (MedMCQA: [opa, opb, opc, opd]).
    options: str | list[str] | None = "options"
    # The same options for every row, instead of a column (PubMedQA: [yes, no, maybe]).
    fixed_options: list[str] | None = None
    # Column with the right option: a 0-based index, a letter (A, B, ...) or the option's text.
    answer: Annotated[str, Field(min_length=1)] = "answer"
    # Use only the first rows (quick looks at a big set); None = all.
    max_rows: Annotated[int, Field(gt=0)] | None = None

    @field_validator("fixed_options", mode="before")
    @classmethod
    def _yes_no(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted yes / no as true / false: [yes, no, maybe] means the words
        if isinstance(value, list):
            return [("yes" if v else "no") if isinstance(v, bool) else v for v in value]
        return value

    @model_validator(mode="after")
    def _options_one_way(self) -> MultipleChoiceSet:
        if self.fixed_options is not None:
            if len(self.fixed_options) < 2:
                raise ValueError(f"fixed_options: give at least 2 options, got {self.fixed_options!r}")
            if "options" in self.model_fields_set and self.options is not None:
                raise ValueError("give either 'options' (column(s)) or 'fixed_options' (the same list for every row)")
        elif self.options is None:
            raise ValueError("give 'options' (a column, or a list of columns) or 'fixed_options'")
        elif isinstance(self.options, list) and len(self.options) < 2:
            raise ValueError(f"options: a list names one column per option: give at least 2, got {self.options!r}")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = Path(self.path).name if Path(self.path).suffix else self.path
        return f"{base}/{self.subset}" if self.subset else base


class EvaluationSection(_Section):
    """Held-out evaluation of every finished trial against the base model (sweeper.train.evaluate)."""

    # Cap on held-out rows scored (trials/<name>/data/test.jsonl, in split order); None = all.
    max_rows: Annotated[int, Field(gt=0)] | None = None
    # Held-out prompts answered greedily by the base and the top trials in reports/<name>/samples.md; 0 = none.
    n_samples: Annotated[int, Field(ge=0)] = 4
    # Length cap of each sample answer (tokens).
    max_new_tokens: Annotated[int, Field(gt=0)] = 64
    # Picks the sample prompts, so reruns show the same ones.
    seed: int = 0
    # Trials sampled: the best by the sweep metric (plus the held-out winner when it is not among them).
    top_k: Annotated[int, Field(gt=0)] = 3
    # Sequences per forward pass when scoring (chosen and rejected count apart).
    batch_size: Annotated[int, Field(gt=0)] = 8
    multiple_choice: list[MultipleChoiceSet] = []

    @model_validator(mode="after")
    def _unique_names(self) -> EvaluationSection:
        labels = [s.label for s in self.multiple_choice]
        twice = sorted({lb for lb in labels if labels.count(lb) > 1})
        if twice:
            raise ValueError(f"multiple_choice: two sets are named {twice[0]!r}: give each a distinct 'name'")
        return self


# ---------------------------------------------------------------------------------------------
# W&B-style sections
# ---------------------------------------------------------------------------------------------


class MetricSection(_Section):
    name: str = "rewards/margins"
    # None = inferred from the name (loss-like: minimize; margins, accuracies, rewards: maximize) and printed.
    goal: Literal["maximize", "minimize"] | None = None
    # A metric sweeper does not know (your own TrainerCallback logs it): allowed only when declared.
    custom: bool = False

    @model_validator(mode="after")
    def _known_and_directed(self) -> MetricSection:
        from sweeper.config.metricnames import KNOWN_METRICS, infer_goal

        if not self.custom and self.name not in KNOWN_METRICS:
            raise ValueError(f"metric.name: '{self.name}' is not a metric TRL's DPOTrainer or sweeper logs"
                             f"{did_you_mean(self.name, sorted(KNOWN_METRICS))}; for your own metric set "
                             "metric.custom: true (and metric.goal)")  # fmt: skip
        if self.goal is None:
            goal = infer_goal(self.name)
            if goal is None:
                raise ValueError(f"metric.goal: cannot tell whether to maximize or minimize '{self.name}' from its "
                                 "name: set metric.goal: maximize or minimize")  # fmt: skip
            object.__setattr__(self, "goal", goal)
        return self

    @property
    def goal_inferred(self) -> bool:
        return "goal" not in self.model_fields_set


DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform", "categorical")


class Parameter(_Section):
    values: list[Scalar] | None = None
    value: Scalar | None = None
    distribution: Literal["uniform", "log_uniform_values", "int_uniform", "q_uniform", "categorical"] | None = None
    # W&B's rule: integers (min: 1, max: 8) sample int_uniform, floats (min: 0.0, max: 1.0) uniform.
    min: int | float | None = None
    max: int | float | None = None
    q: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Parameter:
        given = [k for k in ("values", "value") if getattr(self, k) is not None]
        ranged = self.min is not None or self.max is not None
        if self.distribution == "categorical" and self.values is None:
            raise ValueError("distribution: categorical needs 'values: [...]'")
        if len(given) > 1 or (given and ranged):
            raise ValueError("give exactly one of 'values: [...]', 'value: x' or 'distribution' with min/max")
        if self.values is not None and not self.values:
            raise ValueError("'values' is empty: list at least one value")
        if not given and not ranged and self.distribution is None:
            raise ValueError("give 'values: [...]', 'value: x' or 'distribution' with 'min' and 'max'")
        if ranged or self.distribution not in (None, "categorical"):
            if self.min is None or self.max is None:
                raise ValueError("a distribution needs both 'min' and 'max'")
            if self.min >= self.max:
                raise ValueError(f"'min' must be below 'max', got min={self.min}, max={self.max}")
            if self.kind == "log_uniform_values" and self.min <= 0:
                raise ValueError(f"log_uniform_values needs min > 0, got min={self.min}")
        return self

    @property
    def kind(self) -> str:
        """values | value | one of DISTRIBUTIONS (min/max without a distribution means uniform)."""
        if self.values is not None:
            return "values"
        if self.value is not None:
            return "value"
        if self.distribution is not None:
            return self.distribution
        both_int = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.min, self.max))
        return "int_uniform" if both_int else "uniform"


class EarlyTerminate(BaseModel):
    """Pruning: ``type: optuna`` with any Optuna pruner and its arguments, or W&B's ``type: hyperband``.

    Pruner arguments keep Optuna's names; step arguments (n_warmup_steps, interval_steps, min_resource,
    max_resource) count examples seen (or tokens with ``step_unit: tokens``), not optimizer steps.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    type: Literal["optuna", "hyperband"]
    pruner: Literal[
        "median", "percentile", "peer", "successive_halving", "hyperband", "wilcoxon", "threshold", "patient", "nop"
    ] = "median"
    # Fair steps: trials with different batch x accumulation are compared at equal data seen.
    step_unit: Literal["examples", "tokens"] = "examples"
    # EMA weight of the history for noisy train margins: 0 = raw values, 0.6 = smooth.
    smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # Margin-hacking guard: flag suspicious trials in the report, or also prune them.
    guard: Literal["off", "flag", "prune"] = "flag"
    # Default warm-up (no decision before this fraction of the shortest trial): first margins are exactly 0.
    warmup_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    # The metric the pruner reads; None = the held-out eval_ version of the sweep's metric when training.eval_steps
    # is set (less noisy than train margins at small batches), else the sweep's metric.
    metric: str | None = None
    # What a trial below the bar gets: stop (pruned for good), or pause (Ray Tune's PAUSE with a full Trainer
    # checkpoint at every log step; resumed when the bar falls below it, the leader degrades or is flagged by the
    # guard, or at the end when its upper bound could still beat the winner; sweeper.prune.pause).
    on_prune: Literal["stop", "pause"] = "stop"
    # With on_prune: pause: a trial that reaches the first rung (the warm-up point) while trials are still to start
    # waits there, paused, and is judged against every trial at the rung once all have started (the first trial of
    # a sweep no longer runs to its end unchallenged because it came first).
    breadth_first: bool = False

    @model_validator(mode="after")
    def _known_arguments(self) -> EarlyTerminate:
        from sweeper.config.pruners import OWN_KEYS, PRUNER_ARGS, WANDB_KEYS

        if self.breadth_first and self.on_prune != "pause":
            raise ValueError("early_terminate.breadth_first: trials wait at the first rung paused, which needs "
                             "on_prune: pause: set it, or remove breadth_first")  # fmt: skip

        extra = dict(self.model_extra or {})
        if self.type == "hyperband":
            allowed = WANDB_KEYS - {"type"}
            what = "W&B's hyperband (type: hyperband)"
        else:
            allowed = PRUNER_ARGS[self.pruner]
            what = f"pruner '{self.pruner}'"
        if self.type == "hyperband":
            if extra.get("strict") not in (None, False):
                raise ValueError("early_terminate.strict: W&B's strict hyperband variant is not supported: remove "
                                 "it or set strict: false")  # fmt: skip
            extra.pop("strict", None)
            if "max_iter" in extra and "min_iter" not in extra and "s" not in extra:
                raise ValueError("early_terminate: W&B's hyperband with max_iter needs s (the number of brackets), "
                                 "or give min_iter instead")  # fmt: skip
            if "s" in extra and "max_iter" not in extra:
                raise ValueError("early_terminate.s: W&B's s (brackets) counts down from max_iter: give max_iter too")
            if "s" in extra and not (
                isinstance(extra["s"], int) and not isinstance(extra["s"], bool) and extra["s"] > 0
            ):
                raise ValueError(f"early_terminate.s: a whole number of brackets >= 1, got {extra['s']!r}")
        for key, value in extra.items():
            if key not in allowed:
                hint = did_you_mean(key, sorted(allowed | OWN_KEYS))
                names = ", ".join(sorted(allowed | (OWN_KEYS - {"type"})))
                raise ValueError(f"early_terminate.{key}: not an argument of {what}{hint}; allowed: {names}")
            if key == "wrapped":
                if not isinstance(value, dict) or value.get("pruner") in (None, "patient"):
                    raise ValueError("early_terminate.wrapped: give the wrapped pruner as {pruner: median, ...}")
                EarlyTerminate.model_validate({"type": "optuna", **value})
            elif not (isinstance(value, int | float) and not isinstance(value, bool)) and value != "auto":
                raise ValueError(f"early_terminate.{key}: expected a number, got {value!r}")
            elif isinstance(value, int | float) and value < 0:
                raise ValueError(f"early_terminate.{key}: must be >= 0, got {value!r}")
        if self.type == "optuna" and self.pruner == "wilcoxon":
            import importlib.util

            if importlib.util.find_spec("scipy") is None:
                raise ValueError("early_terminate.pruner: Optuna's WilcoxonPruner needs scipy, which is not installed: "
                                 "pip install scipy, or pick another pruner (peer, median, ...)")  # fmt: skip
        required = {"percentile": ["percentile"], "patient": ["patience"]}.get(self.pruner, [])
        if self.type == "optuna":
            for key in required:
                if key not in extra:
                    raise ValueError(f"early_terminate.{key}: pruner '{self.pruner}' needs '{key}'")
            if self.pruner == "threshold" and not ({"lower", "upper"} & set(extra)):
                raise ValueError("early_terminate: pruner 'threshold' needs 'lower' or 'upper'")
        return self

    @property
    def arguments(self) -> dict[str, Any]:
        """Everything as one mapping, for sweeper.prune.gate."""
        return {**self.model_dump(exclude={"model_extra"}), **(self.model_extra or {})}


# Names that may be swept: every TrainingSection field, plus model-level ones.
MODEL_PARAMETERS = {"quantization": ("model", "quantization"), "reference": ("model", "reference"),
                    "lora_r": ("model", "lora", "r"),
                    "lora_alpha": ("model", "lora", "lora_alpha"),
                    "lora_dropout": ("model", "lora", "lora_dropout"),
                    "max_length": ("data", "max_length")}  # fmt: skip
SWEEPABLE = tuple(TrainingSection.model_fields) + tuple(MODEL_PARAMETERS)
# A grid this large without run_cap is a typo or a generated spec, never a sweep anyone can pay for.
MAX_GRID_TRIALS = 10_000


class Spec(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    description: str | None = None
    method: Literal["grid", "random", "bayes"] = "grid"
    metric: MetricSection = MetricSection()
    parameters: dict[str, Parameter] = {}
    # Most trials to run: required for random/bayes, caps a grid.
    run_cap: Annotated[int, Field(gt=0)] | None = None
    early_terminate: EarlyTerminate | None = None
    # Seed for random sampling of trial configs.
    seed: int = 0
    model: ModelSection
    data: DataSection
    training: TrainingSection = TrainingSection()
    resources: ResourcesSection = ResourcesSection()
    output: OutputSection = OutputSection()
    # Held-out preference evaluation, samples and multiple-choice checks after the sweep; None = none.
    evaluation: EvaluationSection | None = None
    tracking: TrackingSection = TrackingSection()

    @model_validator(mode="before")
    @classmethod
    def _default_rule(cls, data: Any) -> Any:
        """``early_terminate: {type: optuna}`` with no pruner name: sweeper's default rule (config.pruners)."""
        from sweeper.config.pruners import with_default_rule

        if not isinstance(data, dict) or not isinstance(data.get("early_terminate"), dict):
            return data
        return {**data, "early_terminate": with_default_rule(data["early_terminate"])}

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        if self.method == "grid" and self.run_cap is None:
            size = math.prod(len(p.values) if p.values is not None else 1 for p in self.parameters.values())
            if size > MAX_GRID_TRIALS:
                raise ValueError(f"parameters: the grid has {size:,} trials, over the limit of {MAX_GRID_TRIALS:,}: "
                                 "set run_cap (the first run_cap configs run), or sweep fewer values")  # fmt: skip
        if self.method in ("random", "bayes") and self.run_cap is None:
            raise ValueError(f"run_cap: method '{self.method}' samples trials: set run_cap (how many trials to run)")
        for name, param in self.parameters.items():
            if self.method == "grid" and param.kind not in ("values", "value"):
                raise ValueError(
                    f"parameters.{name}: method 'grid' needs 'values: [...]'; "
                    "use method 'random' or 'bayes' for distributions"
                )
        if self.training.padding_free and self.model.attn_implementation != "flash_attention_2":
            raise ValueError("training.padding_free: TRL's padding-free batches need model.attn_implementation: "
                             "flash_attention_2 (a CUDA GPU and the flash-attn package)")  # fmt: skip
        if self.training.precompute_ref_log_probs and self.model.reference != "adapter":
            raise ValueError("training.precompute_ref_log_probs: TRL's precompute replaces the adapter-disabled "
                             f"reference; with model.reference: {self.model.reference} use one or the "
                             "other")  # fmt: skip
        if self.training.early_stopping_patience is not None and self.training.eval_steps is None:
            raise ValueError("training.early_stopping_patience: early stopping reads held-out evaluations: set "
                             "training.eval_steps too")  # fmt: skip
        if self.metric.name.startswith("eval_") and self.training.eval_steps is None:
            raise ValueError(
                f"metric.name: '{self.metric.name}' is an evaluation metric but evaluation is off: "
                "set training.eval_steps, or use a train metric such as 'rewards/margins'"
            )
        if self.evaluation is not None and self.data.test_size == 0:
            raise ValueError("evaluation: needs held-out rows, but data.test_size is 0: set data.test_size > 0 "
                             "(e.g. 0.1) or remove the evaluation section")  # fmt: skip
        return self


# ---------------------------------------------------------------------------------------------
# Checks of parameter values against the field they override
# ---------------------------------------------------------------------------------------------


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value in allowed:
        return value
    raise ValueError(f"unknown value '{value}'{did_you_mean(value, allowed)}; allowed: {', '.join(allowed)}")


def _field_adapter(name: str) -> TypeAdapter[Any]:
    """A validator for one swept value, with the same type, bounds and checks as the field it overrides."""
    path = MODEL_PARAMETERS.get(name, ("training", name))
    model: type[BaseModel] = Spec
    for part in path[:-1]:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    field = model.model_fields[path[-1]]
    extras = (*field.metadata, *_field_validators(model, path[-1]))
    if not extras:
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[(field.annotation, *extras)])  # type: ignore[misc]


def _field_validators(model: type[BaseModel], field: str) -> list[Any]:
    from pydantic import AfterValidator

    allowed = {"lr_scheduler_type": LR_SCHEDULER_TYPES, "optim": OPTIMIZERS, "loss_type": LOSS_TYPES}
    if model is TrainingSection and field in allowed:
        choices = allowed[field]
        return [AfterValidator(lambda v: _one_of(v, choices))]
    return []


def parameter_values(name: str, param: Parameter) -> list[Any]:
    """The listed values of a parameter, each validated (and converted: "1e-6" -> 1e-6) for its field."""
    adapter = _field_adapter(name)
    raw = param.values if param.values is not None else [param.value]
    return [adapter.validate_python(v) for v in raw]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_spec(path: str | Path) -> Spec:
    """Read and validate a sweep spec; raise SpecError with one line per problem."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, not a spec file: give one YAML file (specs live in sweeps/*.yaml)")
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found: check the path (specs live in sweeps/*.yaml)")
    from sweeper.config.safeyaml import load_yaml

    # safe_load behind limits: size, encoding, alias bombs, nesting, duplicate keys, secrets (safeyaml.py)
    return parse_spec(load_yaml(path), source=str(path))


def parse_spec(raw: Any, source: str = "<spec>") -> Spec:
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping (name:, method:, model:, ...), got {kind(raw)}")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError("\n".join(format_errors(exc, raw, source, Spec, Parameter))) from None
    problems = list(_parameter_problems(spec, source))
    if problems:
        raise SpecError("\n".join(problems))
    return spec


def spec_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _parameter_problems(spec: Spec, source: str) -> Any:
    for name, param in spec.parameters.items():
        key = f"parameters.{name}"
        if name not in SWEEPABLE:
            yield (
                f"{source}: {key}: '{name}' is not a sweepable parameter{did_you_mean(name, SWEEPABLE)}; "
                "use DPOConfig names such as learning_rate, per_device_train_batch_size, "
                "gradient_accumulation_steps, beta"
            )
            continue
        if param.kind in ("values", "value"):
            raw = param.values if param.values is not None else [param.value]
            adapter = _field_adapter(name)
            for i, value in enumerate(raw):
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    sub = f"values[{i}]" if param.values is not None else "value"
                    yield f"{source}: {key}.{sub}: {message(exc.errors()[0], value)}"
        elif name in MODEL_PARAMETERS and name != "lora_dropout" and name != "max_length":
            yield f"{source}: {key}: '{name}' takes 'values: [...]', not a distribution"
