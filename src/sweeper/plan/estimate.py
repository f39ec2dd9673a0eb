"""Peak GPU memory of one DPO (Q)LoRA trial, predicted from the model's shape before anything is loaded.

    peak = weights (policy, + a reference copy when separate) + LoRA params, grads and optimizer states
         + ACTIVATION_COEF x activations + logits + CUDA overhead

Units are GiB (2**30 bytes), which is what nvidia-smi and "an 80 GB A100" mean by GB. Every term is counted
from the shape; only ``ACTIVATION_COEF`` is fitted (to the seed's table, see ``SEED``), and ``calibrate``
refits it from peaks measured in a sweep. The terms, per trial setting:

- weights: linear layers at 4-bit nf4 (0.5 byte + quantization constants), 8-bit (1 byte) or 16-bit;
  embeddings and LM head stay 16-bit. ``reference="separate"`` adds a second copy of the same weights (the
  seed's setup); ``"adapter"`` (what sweeper trials do: TRL with ``ref_model=None``) adds nothing.
- LoRA: r x (in + out) per adapted linear; params and grads in bf16 on a quantized base (TRL casts them),
  fp32 otherwise; optimizer states 8 bytes/param for 32-bit Adam, 2 for 8-bit. Paged optimizers can spill
  their states to CPU under pressure; they are counted as resident (an upper bound, and small).
- activations, per token of a micro-batch (chosen + rejected: 2 x batch x max_length tokens at worst):
  with gradient checkpointing every layer's input, the last layer's output and the final norm's are kept and one
  layer is recomputed in full during backward; without, every layer keeps everything. LoRA dropout makes each
  adapter keep its own copy of its input and a mask. SDPA/flash attention (no seq^2 term).
- logits: ``"full"`` materializes fp32 logits, their log-softmax and its gradient (vocab x tokens x 3),
  as TRL < 1.0 did (the seed); ``"chunked"`` is TRL >= 1.x's fused LM head: one [4096 tokens x 32768 vocabulary
  columns] tile in the compute dtype and the fp32 gradient of the hidden states.
- the compute dtype: bf16 on a GPU (``compute_bytes`` 2); a CPU trial computes in fp32 (4), which
  benchmarks/memory_physics.py uses to check every term against one real step's tensors.

Light module: imports neither torch, transformers nor ray.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.records.metrics import CUDA_MAX_RESERVED_MB, NVML_PEAK_USED_MB, PREDICTED_PEAK_GB

if TYPE_CHECKING:
    from sweeper.plan.settings import TrialSettings

GIB = 2**30
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# CUDA context, cuBLAS workspaces and allocator slack that torch's counters do not see (typical for one GPU
# process with bitsandbytes; an assumption, not measured here: no GPU was lent to this work).
OVERHEAD_GB = 1.0
LOGIT_CHUNK_TOKENS = 4096  # trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE (TRL 1.16)
LOGIT_VOCAB_CHUNK = 32768  # trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE: the fused head's tile width
# The fused head's torch fallback (devices without Triton: a CPU) holds this many fp32 tiles at its peak, in
# _backward_tile: y, z, log_p, p, grad, is_target.float(), (is_target - p) and its product with the gradient.
TORCH_TILE_TEMPORARIES = 8


@dataclass(frozen=True)
class Shape:
    """What memory depends on in a Llama/Mistral-style decoder (names as in config.json)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.num_key_value_heads

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip

    def n_linear(self) -> int:
        return self.num_hidden_layers * sum(a * b for a, b in self.linear_dims().values())

    def n_embedding(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def n_params(self) -> int:
        return self.n_linear() + self.n_embedding()


MISTRAL_7B = Shape(4096, 14336, 32, 32, 8, 32000)
LLAMA_3_8B = Shape(4096, 14336, 32, 32, 8, 128256)
SMOLLM2_135M = Shape(576, 1536, 30, 9, 3, 49152, tie_word_embeddings=True)
# sweeper.train.tiny's model (tiny-mistral-v1): its byte-level BPE saturates at 903 tokens.
TINY_MISTRAL = Shape(64, 128, 2, 4, 2, 903)
KNOWN_SHAPES = {
    "mistralai/Mistral-7B-v0.1": MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.1": MISTRAL_7B,
    "mistralai/Mistral-7B-Instruct-v0.2": MISTRAL_7B,
    "meta-llama/Meta-Llama-3-8B": LLAMA_3_8B,
    "meta-llama/Meta-Llama-3-8B-Instruct": LLAMA_3_8B,
    "HuggingFaceTB/SmolLM2-135M": SMOLLM2_135M,
    "HuggingFaceTB/SmolLM2-135M-Instruct": SMOLLM2_135M,
    "builtin:tiny-mistral": TINY_MISTRAL,
    "builtin:smollm2-135m-instruct": SMOLLM2_135M,
}


def shape_from_config(config: dict[str, Any]) -> Shape:
    """A Shape from a Hugging Face config.json (plain JSON: no transformers needed)."""
    heads = int(config["num_attention_heads"])
    return Shape(
        hidden_size=int(config["hidden_size"]),
        intermediate_size=int(config["intermediate_size"]),
        num_hidden_layers=int(config["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(config.get("num_key_value_heads") or heads),
        vocab_size=int(config["vocab_size"]),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def model_shape(name_or_path: str) -> Shape | None:
    """The shape of a model: a local folder's config.json, the known table, or the local Hub cache; else None."""
    folder = Path(name_or_path)
    for config in (folder / "config.json", *_hub_cache_configs(name_or_path)):
        if config.is_file():
            try:
                return shape_from_config(json.loads(config.read_text(encoding="utf-8")))
            except (KeyError, TypeError, ValueError):
                continue
    return KNOWN_SHAPES.get(name_or_path)


def _hub_cache_configs(repo_id: str) -> list[Path]:
    if "/" not in repo_id or repo_id.startswith(("/", ".")):
        return []
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    snapshots = hub.expanduser() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []


@dataclass(frozen=True)
class Setup:
    """Everything the prediction depends on; defaults are sweeper's spec defaults."""

    shape: Shape
    micro_batch: int = 8  # per_device_train_batch_size
    max_length: int = 1024
    quantization: str = "4bit"  # 4bit | 8bit | none
    double_quant: bool = True
    reference: str = "adapter"  # adapter (no second copy) | separate (a second quantized copy)
    lora_r: int = 16
    lora_targets: str | tuple[str, ...] = "all-linear"
    optim: str = "paged_adamw_32bit"
    gradient_checkpointing: bool = True
    logits: str = "chunked"  # chunked (TRL >= 1.x) | full (TRL < 1.0, the seed)
    attention: str = "sdpa"  # sdpa / flash (no seq^2 tensor kept) | eager (keeps heads x seq^2 probabilities)
    lora_dropout: float = 0.05  # > 0: every adapter keeps its dropped-out input and the mask for backward
    compute_bytes: int = 2  # bytes per activation: bf16/fp16 on a GPU; 4 for fp32 (what a CPU trial computes in)
    device: str = "cuda"  # cuda: the fused LM head runs in Triton | cpu: in torch, with full-tile temporaries

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch at worst: chosen and rejected, each padded to max_length."""
        return 2 * self.micro_batch * self.max_length

    def adapted(self) -> list[str]:
        if self.lora_targets == "all-linear":
            return list(LINEARS)
        return [name for name in LINEARS if name in self.lora_targets]


@dataclass(frozen=True)
class Breakdown:
    """A prediction in GiB, term by term."""

    weights: float
    reference: float
    lora: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.weights + self.reference + self.lora + self.activations + self.logits + self.overhead

    @property
    def fixed(self) -> float:
        """Everything but activations: what calibration does not rescale."""
        return self.total - self.activations


def weight_bytes(setup: Setup) -> float:
    shape = setup.shape
    if setup.quantization == "4bit":
        # nf4: 4 bits per weight + an absmax per 64 weights (fp32, or 8-bit with a second fp32 per 256 blocks)
        per = 0.5 + (1 / 64 + 4 / (64 * 256) if setup.double_quant else 4 / 64)
    elif setup.quantization == "8bit":
        per = 1.0
    else:
        per = float(setup.compute_bytes)
    return shape.n_linear() * per + shape.n_embedding() * float(setup.compute_bytes)  # embeddings stay unquantized


def lora_bytes(setup: Setup) -> float:
    dims = setup.shape.linear_dims()
    n = setup.shape.num_hidden_layers * sum(setup.lora_r * sum(dims[m]) for m in setup.adapted())
    param_and_grad = 2 * 2 if setup.quantization in ("4bit", "8bit") else 2 * 4
    return n * (param_and_grad + optimizer_state_bytes(setup.optim))


def optimizer_state_bytes(optim: str) -> float:
    """Bytes of optimizer state per trainable parameter."""
    if optim in ("sgd",):
        return 0.0
    if "8bit" in optim:
        return 1.0 if "lion" in optim else 2.0
    if "lion" in optim or optim in ("adagrad", "rmsprop", "adafactor"):
        return 4.0
    return 8.0  # AdamW: two fp32 moments


def layer_bytes_per_token(setup: Setup) -> float:
    """Bytes one decoder layer keeps for backward, per token (SDPA attention, LoRA adapters)."""
    shape, c = setup.shape, setup.compute_bytes
    h, i, kv = shape.hidden_size, shape.intermediate_size, shape.kv_dim
    norms = 2 * (max(c, 4) * h + c * h)  # two RMSNorms: the fp32 copy of the input (the input itself in fp32) + output
    attention = c * (h + 2 * kv) + c * h  # q, k, v after RoPE + the attention output (o_proj's input)
    mlp = 4 * c * i  # gate, up, silu(gate), silu(gate) * up (down_proj's input)
    dims, adapted = shape.linear_dims(), setup.adapted()
    lora = len(adapted) * setup.lora_r * c  # A's output, which B keeps
    if setup.lora_dropout > 0:  # each adapter's own dropped-out input and its mask (bool); without dropout A reads
        lora += sum((c + 1) * dims[m][0] for m in adapted)  # the layer's input, already kept
    return norms + attention + mlp + lora


def attention_bytes(setup: Setup) -> float:
    """Eager attention's probabilities in one layer: fp32 softmax + its 16-bit copy + the 16-bit scores."""
    if setup.attention != "eager":
        return 0.0
    return 2 * setup.micro_batch * setup.shape.num_attention_heads * setup.max_length**2 * (4 + 2 + 2)


def activation_bytes(setup: Setup) -> float:
    """Nominal activation bytes of one micro-batch (ACTIVATION_COEF scales them)."""
    shape, tokens = setup.shape, setup.tokens
    one_layer = tokens * layer_bytes_per_token(setup) + attention_bytes(setup)
    if setup.gradient_checkpointing:  # every layer's input and the last one's output, + one layer recomputed
        return checkpoint_bytes(setup) + one_layer
    return shape.num_hidden_layers * one_layer


def checkpoint_bytes(setup: Setup) -> float:
    """What gradient checkpointing keeps through the forward: each layer's input (held by its checkpoint for the
    recompute), the last layer's output, and what the final norm keeps: its output (which the fused LM head reads
    in backward) and, below fp32, its fp32 copy of the input."""
    shape, c = setup.shape, setup.compute_bytes
    hidden = setup.tokens * shape.hidden_size
    return hidden * ((shape.num_hidden_layers + 2) * c + (4 if c < 4 else 0))


def logit_bytes(setup: Setup) -> float:
    """The LM head's peak: full fp32 logits, their log-softmax and gradient (TRL < 1.0), or TRL 1.x's fused head:
    one [4096-token x 32768-column] tile in the compute dtype and the fp32 gradient of the hidden states (on a CPU
    the torch fallback adds TORCH_TILE_TEMPORARIES fp32 tiles as wide as the vocabulary chunk)."""
    shape = setup.shape
    if setup.logits == "full":
        return 3 * 4.0 * setup.tokens * shape.vocab_size
    rows = min(setup.tokens, LOGIT_CHUNK_TOKENS)
    chunked = rows * LOGIT_VOCAB_CHUNK * setup.compute_bytes + setup.tokens * shape.hidden_size * 4.0
    if setup.device == "cpu":
        chunked += TORCH_TILE_TEMPORARIES * rows * min(shape.vocab_size, LOGIT_VOCAB_CHUNK) * 4.0
    return chunked


# Fitted, not measured: calibrate() on SEED's setup with the seed's two in-range readings (batch 2 -> 27.5 GB,
# batch 8 -> 57.5 GB, the midpoints of 25-30 and 50-65) gives 1.78. It absorbs what the nominal count leaves
# out: allocator fragmentation (reserved > allocated with varying lengths) and dequantization temporaries; the
# terms themselves are checked on CPU by benchmarks/memory_physics.py. With 1.0 the seed's setup predicts
# 17.6 / 41.2 / 72.6 GB at batch 2 / 8 / 16. README "Memory".
ACTIVATION_COEF = 1.78


def predict(setup: Setup, coef: float = ACTIVATION_COEF) -> Breakdown:
    weights = weight_bytes(setup) / GIB
    return Breakdown(
        weights=weights,
        reference=weights if setup.reference == "separate" else 0.0,
        lora=lora_bytes(setup) / GIB,
        activations=coef * activation_bytes(setup) / GIB,
        logits=logit_bytes(setup) / GIB,
        overhead=OVERHEAD_GB,
    )


def setup_from_settings(settings: TrialSettings, reference: str | None = None) -> Setup | None:
    """The Setup of one trial's settings (sweeper.plan.settings); None when the model's shape is unknown.

    ``reference`` defaults to the trial's ``model.reference``; ``shared`` holds no copy, like ``adapter``.
    """
    model, training = settings.model, settings.training
    reference = reference or model.reference
    reference = "separate" if reference == "separate" else "adapter"
    shape = model_shape(model.name_or_path)
    if shape is None:
        return None
    targets = model.lora.target_modules
    return Setup(
        shape=shape,
        micro_batch=int(training.per_device_train_batch_size),
        max_length=int(settings.data.max_length),
        quantization=model.quantization,
        double_quant=bool(model.bnb_4bit_use_double_quant),
        reference=reference,
        lora_r=int(model.lora.r),
        lora_targets=targets if isinstance(targets, str) else tuple(targets),
        optim=training.optim,
        gradient_checkpointing=bool(training.gradient_checkpointing),
        lora_dropout=float(model.lora.lora_dropout),
        attention="eager" if model.attn_implementation == "eager" else "sdpa",
        # Liger's fused linear + log-prob never materializes the logits: the chunked term bounds it from above
        logits="chunked",
    )


def assumptions(settings: TrialSettings) -> str:
    """What a prediction for these settings assumes, in one line (the dry run prints it per sweep)."""
    model, training, setup = settings.model, settings.training, setup_from_settings(settings)
    if setup is None:
        return "unknown model shape: no prediction"
    quant = {"4bit": f"4-bit {model.bnb_4bit_quant_type}" + (" with double quantization"
                                                             if model.bnb_4bit_use_double_quant else ""),
             "8bit": "8-bit LLM.int8", "none": "16-bit weights"}[model.quantization]  # fmt: skip
    attention = ("eager attention (heads x seq^2 probabilities kept)" if setup.attention == "eager"
                 else f"{model.attn_implementation or 'sdpa'} attention (no seq^2 tensor)")  # fmt: skip
    return (
        f"TRL >= 1.0 chunked log-probs ({LOGIT_CHUNK_TOKENS}-token chunks, not full fp32 logits), bf16 compute, "
        f"{attention}, LoRA dropout {model.lora.lora_dropout:g}, "
        f"gradient checkpointing {'on' if training.gradient_checkpointing else 'off'}, every sequence at "
        f"max_length {settings.data.max_length} (worst case), reference {model.reference}"
        f"{' (a second copy of the weights)' if model.reference == 'separate' else ' (no second copy)'}, "
        f"{quant}, {OVERHEAD_GB:g} GB CUDA overhead, activation coefficient {ACTIVATION_COEF:g} fitted to the seed's "
        "readings (the terms are checked on CPU by benchmarks/memory_physics.py)" + _not_modelled(training)
    )


def _not_modelled(training: Any) -> str:
    """TRL memory options that run for real but that the estimate does not count: it stays an upper bound."""
    unmodelled = [f"training.{name} ({why})" for name, why in (
        ("use_liger_kernel", "Liger's fused RMSNorm, SwiGLU and RoPE keep less for backward"),
        ("padding_free", "padding-free batches hold the data's own lengths, not max_length"),
    ) if getattr(training, name, False)]  # fmt: skip
    if not unmodelled:
        return ""
    return "; not modelled: " + ", ".join(unmodelled) + ": the prediction is an upper bound"


def predict_settings(
    settings: TrialSettings, reference: str | None = None, coef: float = ACTIVATION_COEF
) -> float | None:
    """Predicted peak GiB of one trial on a GPU, or None when the model's shape is unknown."""
    setup = setup_from_settings(settings, reference)
    return None if setup is None else predict(setup, coef).total


def calibrate(pairs: Iterable[tuple[Setup, float]], coef: float = ACTIVATION_COEF) -> float:
    """Refit ACTIVATION_COEF from (setup, measured peak GiB) pairs: least squares on the activation term.

    measured - fixed terms = coef x nominal activations, so coef = sum(a * r) / sum(a * a).
    Returns ``coef`` unchanged when there is nothing to fit.
    """
    num = den = 0.0
    for setup, measured in pairs:
        nominal = activation_bytes(setup) / GIB
        num += nominal * (measured - predict(setup, 0.0).fixed)
        den += nominal * nominal
    return max(num / den, 0.0) if den > 0 else coef


def measured_peak_gb(final: dict[str, Any]) -> tuple[float, str] | None:
    """A trial's measured GPU peak in GiB and where it comes from: NVML device-wide (what nvidia-smi shows),
    else torch's reserved peak plus OVERHEAD_GB; None for CPU trials."""
    if isinstance(final.get(NVML_PEAK_USED_MB), int | float):
        return final[NVML_PEAK_USED_MB] / 1024, "nvml"
    if isinstance(final.get(CUDA_MAX_RESERVED_MB), int | float):
        return final[CUDA_MAX_RESERVED_MB] / 1024 + OVERHEAD_GB, "cuda_reserved"
    return None


def predicted_vs_measured(finals: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain rows for a report: predicted (reported by the trial) vs measured peak GiB, and the error."""
    rows = []
    for final in finals:
        predicted = final.get(PREDICTED_PEAK_GB)
        measured = measured_peak_gb(final)
        row: dict[str, Any] = {"predicted_gb": predicted, "measured_gb": None, "source": None, "error_pct": None}
        if measured is not None:
            row["measured_gb"], row["source"] = round(measured[0], 2), measured[1]
            if isinstance(predicted, int | float) and measured[0] > 0:
                row["error_pct"] = round(100 * (predicted - measured[0]) / measured[0], 1)
        rows.append(row)
    return rows


# The seed: Mistral-7B-Instruct-v0.2, two 4-bit copies (policy + a separate reference), LoRA r=16 on all
# linear layers, paged AdamW 32-bit, gradient checkpointing, max_length 1536 (the seed blog's value), TRL of
# early 2024 (full logits). Readings on an A100 80 GB: batch -> (low, high) GB; batch 16 filled the card.
SEED = replace(
    Setup(MISTRAL_7B), max_length=1536, reference="separate", logits="full", attention="eager", double_quant=False
)
SEED_TABLE = {2: (25.0, 30.0), 8: (50.0, 65.0), 16: (78.0, 78.0)}


def _coef_band() -> tuple[float, float]:
    """The activation coefficients that fit the low and the high ends of the seed's two ranged readings."""
    ends = [[(replace(SEED, micro_batch=b), SEED_TABLE[b][i]) for b in (2, 8)] for i in (0, 1)]
    return calibrate(ends[0]), calibrate(ends[1])


# The prediction band: the activation term at the coefficients that fit the low and the high ends of the seed's
# readings (1.44 and 2.12 around 1.78), scaled with the coefficient when a sweep refits it. It is the spread
# of the one fitted term, not of the shape-counted ones (weights, LoRA, overhead), and no GPU measurement of
# today's stack narrows it yet.
COEF_BAND = _coef_band()


def predict_band(settings: TrialSettings, coef: float = ACTIVATION_COEF) -> tuple[float, float] | None:
    """(low, high) predicted peak GiB of one trial; None when the model's shape is unknown."""
    setup = setup_from_settings(settings)
    if setup is None:
        return None
    scale = coef / ACTIVATION_COEF
    return predict(setup, COEF_BAND[0] * scale).total, predict(setup, COEF_BAND[1] * scale).total
