"""The memory estimate's physics, measured on CPU: one real DPO step's tensor bytes, term by term.

    PYTHONPATH=src python benchmarks/memory_physics.py [--models smollm2 tiny] [--batches 1 2 4]
        [--lengths 128 256 512] [--quantization 4bit none] [--reference adapter separate] [--bf16] [--json F]

Tensor sizes do not depend on the device, so the terms of sweeper.plan.estimate can be checked without a GPU.
Each cell is a fresh subprocess that builds a trial exactly as a sweep does (sweeper.train.trial.load and
make_trainer: TRL's DPOTrainer, PEFT LoRA, bitsandbytes), collates one batch of rows long enough that every
chosen and rejected sequence is truncated to max_length (the estimate's worst case: 2 x batch x max_length
tokens), and runs TRL's compute_loss, backward and one optimizer step. What it measures, and how:

  weights      bytes of the base model's frozen parameters, buffers and bitsandbytes quantization states
               (absmax, code, nested absmax), each storage counted once
  reference    the same for the separate reference copy (reference: separate), else 0
  lora         the adapter's parameters + their gradients (after backward) + the optimizer's states (after the
               step): what the optimizer holds
  kept         the bytes still alive at the end of the forward, i.e. kept for backward (with gradient
               checkpointing: each layer's input, held by its checkpoint, the last layer's output, and what the
               final norm, the fused LM head and the loss keep; the JSON splits it at the final norm)
  layer        the most one decoder layer keeps, from a second forward with checkpointing off (live bytes
               from one layer's start to the next's): what a checkpointed layer holds while it is recomputed
  peak         the peak of live tensor bytes over the whole step: the tensors that existed before it (weights,
               adapter) + the peak of every storage created inside it, tracked by a TorchDispatchMode with a
               weakref per storage (every kept, temporary and gradient tensor is some op's output; the
               method of torch.distributed._tools.mem_tracker.MemTracker, which itself refuses frozen
               parameters, i.e. every LoRA model)
  transient    what the moment of the peak adds on top of what the forward kept (peak in backward) or on top of
               the layers' kept bytes (peak in the head's forward); where it happens is printed. The estimate's
               logits term models it

Predicted: sweeper.plan.estimate with the activation coefficient at 1.0 (physics alone; the fitted 1.92 also
absorbs the CUDA allocator's fragmentation, which a CPU has no equivalent of), and the CUDA overhead left out.
fp32 by default: CPU bf16 matmuls are ~20x slower here; --bf16 measures what a GPU trial computes in.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import long_rows, one_trial  # isort: skip

MODELS = {"smollm2": "builtin:smollm2-135m-instruct", "tiny": "builtin:tiny-mistral"}
MIB = 2**20
GOAL = 0.15  # every term within 15% of the measurement


def trial_settings(model: str, quantization: str, reference: str, batch: int, length: int, bf16: bool) -> Any:
    return one_trial(
        {"name_or_path": model, "quantization": quantization, "reference": reference},
        {"max_length": length},
        {"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "max_steps": 1, "bf16": bf16,
         "logging_steps": 1, "eval_steps": None, "gradient_checkpointing": True},
    )  # fmt: skip


def storages(tensors: Any) -> dict[int, int]:
    """data_ptr -> bytes of each distinct storage among the tensors."""
    out = {}
    for t in tensors:
        st = t.untyped_storage()
        if st.nbytes():
            out[st.data_ptr()] = st.nbytes()
    return out


def quant_state_tensors(module: Any) -> list[Any]:
    """The tensors of a bitsandbytes 4-bit weight's quantization state (absmax, code, and the nested state's)."""
    import torch

    found, todo = [], [getattr(p, "quant_state", None) for p in module.parameters(recurse=True)]
    while todo:
        state = todo.pop()
        if state is None:
            continue
        for value in vars(state).values():
            if isinstance(value, torch.Tensor):
                found.append(value)
            elif hasattr(value, "absmax"):  # the nested QuantState of double quantization
                todo.append(value)
    return found


def frozen_bytes(model: Any, trained: bool = True) -> int:
    """Bytes of a model's weights; of a trained one (an adapter on it) its frozen part only."""
    tensors = [p for p in model.parameters() if not (trained and p.requires_grad)] + list(model.buffers())
    return sum(storages(tensors + quant_state_tensors(model)).values())


def peak_mode(where: dict[str, Any], existing: set[int]) -> Any:
    """A TorchDispatchMode that tracks every storage created inside it (weakref per storage) and its peak."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class PeakLive(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, Any] = {}
            self.current = self.peak = 0
            self.at_peak: dict[str, Any] = {}
            self.biggest: tuple[int, str] = (0, "")

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if hasattr(t, "untyped_storage") and t.device.type == "cpu":
                    self._track(t, func)
            return out

        def _track(self, t: Any, func: Any) -> None:
            st = t.untyped_storage()
            key, n = st.data_ptr(), st.nbytes()
            if n == 0 or key in self.live or key in existing:  # a view of a weight is not new memory
                return
            self.current += n
            if n > self.biggest[0]:
                self.biggest = (n, f"{where['region']} {func} {tuple(t.shape)} {t.dtype}")
            self.live[key] = weakref.ref(st, lambda _r, key=key, n=n: self._free(key, n))
            if self.current > self.peak:
                self.peak = self.current
                self.at_peak = {"region": where["region"], "op": str(func)}

        def _free(self, key: int, n: int) -> None:
            if self.live.pop(key, None) is not None:
                self.current -= n

    return PeakLive()


def regions(model: Any, where: dict[str, Any], mode: Any) -> list[Any]:
    """Hooks that name where the step is and read the live bytes at each decoder layer's start and at the head."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = base.model.layers

    def enter(name: str) -> Any:
        def hook(*_: Any) -> None:
            if not torch.is_grad_enabled():  # the reference forward (no_grad) runs the same modules: not it
                return
            where["region"] = name
            where.setdefault("live_at", {})[name] = mode.current

        return hook

    handles = [layer.register_forward_pre_hook(enter(f"layer{i}")) for i, layer in enumerate(layers)]
    handles.append(base.model.norm.register_forward_pre_hook(enter("head")))  # outside any checkpoint
    return handles


def measure(model_name: str, quantization: str, reference: str, batch: int, length: int, bf16: bool) -> dict:
    """One cell, in this process: the measured bytes of every term (see the module docstring)."""
    import torch

    from sweeper.train.trial import TrialJob, load, make_trainer

    torch.set_num_threads(1)
    settings = trial_settings(MODELS[model_name], quantization, reference, batch, length, bf16)
    job = TrialJob(settings, long_rows(batch, 120), [], 1)
    torch.manual_seed(0)
    loaded = load(job)
    with tempfile.TemporaryDirectory(prefix="sweeper-physics-") as work:
        trainer = make_trainer(job, loaded, work, [])
        inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        model = trainer.model
        model.train()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
        trainer.create_optimizer_and_scheduler(num_training_steps=1)
        adapter = [p for p in model.parameters() if p.requires_grad]
        cell: dict[str, Any] = {
            "tokens": int(inputs["input_ids"].numel()), "shape": list(inputs["input_ids"].shape),
            "weights": frozen_bytes(model),
            "reference": frozen_bytes(loaded.ref_model, trained=False) if loaded.ref_model is not None else 0,
            "lora_params": sum(storages(adapter).values())}  # fmt: skip

        existing = set(
            storages(
                [
                    *model.parameters(),
                    *model.buffers(),
                    *quant_state_tensors(model),
                    *[v for v in inputs.values() if isinstance(v, torch.Tensor)],
                ]
            )
        )
        if loaded.ref_model is not None:
            existing |= set(
                storages(
                    [
                        *loaded.ref_model.parameters(),
                        *loaded.ref_model.buffers(),
                        *quant_state_tensors(loaded.ref_model),
                    ]
                )
            )
        where: dict[str, Any] = {"region": "embed"}
        mode = peak_mode(where, existing)
        handles = regions(model, where, mode)
        started = time.monotonic()
        with mode:
            loss = trainer.compute_loss(model, inputs)
            forward_end = mode.current
            where["region"] = "backward"
            loss.backward()
            grads = sum(storages([p.grad for p in adapter if p.grad is not None]).values())
            where["region"] = "optimizer step"
            trainer.optimizer.step()
        cell["seconds"] = round(time.monotonic() - started, 1)
        cell["kept_layers"] = where["live_at"]["head"]  # every checkpointed layer's input, and the last output
        cell["kept_head"] = forward_end - where["live_at"]["head"]
        cell["kept"] = forward_end
        states = [t for s in trainer.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        cell["lora_grads"], cell["lora_states"] = grads, sum(storages(states).values())
        cell["lora"] = cell["lora_params"] + grads + cell["lora_states"]
        cell["peak"] = cell["weights"] + cell["reference"] + cell["lora_params"] + mode.peak
        in_forward = mode.at_peak["region"] not in ("backward", "optimizer step")
        cell["transient"] = mode.peak - (where["live_at"]["head"] if in_forward else forward_end)
        cell["peak_at"] = f"{mode.at_peak['region']} {mode.at_peak['op']}"
        cell["biggest"] = f"{mode.biggest[0] / MIB:.1f} MiB {mode.biggest[1]}"

        trainer.optimizer.zero_grad(set_to_none=True)
        for module in model.modules():  # what one layer keeps: a checkpointed layer while it is recomputed
            if getattr(module, "gradient_checkpointing", False):
                module.gradient_checkpointing = False
        where.clear()
        where["region"] = "embed"
        mode = peak_mode(where, existing)
        for h in handles:
            h.remove()
        handles = regions(model, where, mode)
        with mode:
            loss = trainer.compute_loss(model, inputs)
        live = where["live_at"]
        n = len([k for k in live if k.startswith("layer")])
        cell["layer"] = max(live[f"layer{i + 1}"] - live[f"layer{i}"] for i in range(n - 1))
        del loss
        for h in handles:
            h.remove()
    return cell


def predicted(model_name: str, quantization: str, reference: str, batch: int, length: int, bf16: bool) -> dict:
    from sweeper.plan import estimate

    setup = estimate.setup_from_settings(trial_settings(MODELS[model_name], quantization, reference, batch, length,
                                                        bf16))  # fmt: skip
    assert setup is not None
    setup = replace(setup, compute_bytes=2 if bf16 else 4, device="cpu")
    shape = setup.shape
    return {
        "weights": estimate.weight_bytes(setup),
        "reference": estimate.weight_bytes(setup) if reference == "separate" else 0,
        "lora": estimate.lora_bytes(setup),
        "kept": estimate.checkpoint_bytes(setup),
        "layer": setup.tokens * estimate.layer_bytes_per_token(setup) + estimate.attention_bytes(setup),
        "transient": estimate.logit_bytes(setup),
        "peak": (estimate.predict(setup, 1.0).total - estimate.OVERHEAD_GB) * estimate.GIB,
        "tokens": setup.tokens,
        "n_layers": shape.num_hidden_layers,
    }


TERMS = ("weights", "reference", "lora", "kept", "layer", "transient", "peak")


def table(cells: list[dict]) -> str:
    head = ("| model | quant | reference | batch | max_length | " + " | ".join(TERMS) + " | worst |\n"
            "|---|---|---|---|---|" + "---|" * (len(TERMS) + 1))  # fmt: skip
    lines = [head]
    for c in cells:
        errs, shown = [], []
        for term in TERMS:
            m, p = c["measured"][term], c["predicted"][term]
            if m == 0 and p == 0:
                shown.append("0")
                continue
            err = (p - m) / m if m else float("inf")
            errs.append((abs(err), term, err))
            shown.append(f"{m / MIB:.1f} / {p / MIB:.1f} ({err:+.0%})")
        worst = max(errs)
        mark = "ok" if worst[0] <= GOAL else f"**{worst[1]} {worst[2]:+.0%}**"
        lines.append(f"| {c['model']} | {c['quantization']} | {c['reference']} | {c['batch']} | {c['length']} | "
                     + " | ".join(shown) + f" | {mark} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 256, 512])
    parser.add_argument("--quantization", nargs="+", default=["4bit", "none"], choices=["4bit", "8bit", "none"])
    parser.add_argument("--reference", nargs="+", default=["adapter", "separate"], choices=["adapter", "separate"])
    parser.add_argument("--bf16", action="store_true", help="compute in bf16 (slow on CPU); default fp32")
    parser.add_argument("--json", type=Path, help="also write every cell's measured and predicted bytes here")
    parser.add_argument("--cell", nargs=5, help=argparse.SUPPRESS)  # model quant reference batch length
    args = parser.parse_args(argv)
    if args.cell:
        m, q, r, b, n = args.cell
        print("CELL " + json.dumps(measure(m, q, r, int(b), int(n), args.bf16)), flush=True)
        return 0
    cells = []
    for m in args.models:
        for q in args.quantization:
            for r in args.reference:
                for b in args.batches:
                    for n in args.lengths:
                        cmd = [sys.executable, __file__, "--cell", m, q, r, str(b), str(n)] + (["--bf16"] * args.bf16)
                        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                        found = [ln for ln in done.stdout.splitlines() if ln.startswith("CELL ")]
                        if not found:
                            print(f"{m} {q} {r} {b}x{n}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                            continue
                        cell = {
                            "model": m,
                            "quantization": q,
                            "reference": r,
                            "batch": b,
                            "length": n,
                            "measured": json.loads(found[0][5:]),
                            "predicted": predicted(m, q, r, b, n, args.bf16),
                        }
                        cells.append(cell)
                        print(f"{m} {q} {r} batch {b} x {n}: {cell['measured']['seconds']} s, peak at "
                              f"{cell['measured']['peak_at']}", file=sys.stderr, flush=True)  # fmt: skip
                        if args.json:
                            args.json.write_text(json.dumps(cells, indent=1))
    print(
        "Measured / predicted MiB (error of the prediction); predicted at activation coefficient 1.0, "
        f"{'bf16' if args.bf16 else 'fp32'} compute, CUDA overhead left out"
    )
    print(table(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
