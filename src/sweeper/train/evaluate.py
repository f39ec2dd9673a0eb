"""Held-out evaluation on the model side: log-probs of chosen and rejected answers, greedy samples, option
likelihoods, for the base model and each trial's LoRA adapter.

The base is loaded once (as ``hf.load_model`` loads it for a trial) and wrapped by PEFT at the first adapter; each trial
swaps its adapter in (``load_adapter`` / ``set_adapter``, the previous one deleted), and the base, which is also
DPO's reference, is the same model under ``disable_adapter()``. Heavy module: torch, transformers and PEFT.
``run_jobs`` is plain data in, plain data out, so the driver can run it inline or as a Ray task.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from sweeper.config.spec import ModelSection
from sweeper.data.rows import make_prompt_renderer
from sweeper.errors import first_line
from sweeper.records.heldout import PairLogps, choice_metrics, generation_metrics, preference_metrics
from sweeper.train.hf import bf16_for, load_model, set_threads, use_cuda
from sweeper.train.tokens import common_prefix


class Evaluator:
    """One base model in memory; ``activate(name, adapter_dir)`` puts a trial's adapter on it (None: the base)."""

    def __init__(self, model: ModelSection, max_length: int, batch_size: int = 8, cpus: float = 1,
                 bf16: bool | None = None) -> None:  # fmt: skip
        """``bf16`` is the trials' ``training.bf16``: the base is evaluated in the dtype they trained in."""
        self.threads = set_threads(cpus)  # one torch thread per CPU share (RECIPES: 2 threads on 1 core crawl)
        self.tokenizer, self.base = load_model(model, bf16_for(bf16))
        self.base.config.use_cache = True  # load_model turns it off for gradient checkpointing; generation wants it
        self.base.eval()
        self.model: Any = self.base
        self.adapter: str | None = None  # the adapter on the model now
        self.max_length = max_length
        self.batch_size = batch_size
        self.render = make_prompt_renderer(self.tokenizer)
        self.device = next(self.base.parameters()).device

    # -- adapters ----------------------------------------------------------------------------------

    def activate(self, name: str | None, adapter_dir: Path | None = None) -> None:
        """Load ``adapter_dir`` as adapter ``name`` and make it the active one; the previous one is deleted."""
        if name is None or name == self.adapter:
            return
        from peft import PeftModel

        if adapter_dir is None:
            raise ValueError(f"adapter {name!r} is not loaded: give its folder")
        if not isinstance(self.model, PeftModel):
            self.model = PeftModel.from_pretrained(self.base, str(adapter_dir), adapter_name=name)
        else:
            self.model.load_adapter(str(adapter_dir), adapter_name=name)
            self.model.set_adapter(name)
            if self.adapter is not None:
                self.model.delete_adapter(self.adapter)
        self.model.eval()
        self.adapter = name

    @contextlib.contextmanager
    def using(self, adapter: bool) -> Iterator[Any]:
        """The model with the active adapter (True), or the base / reference with it disabled (False)."""
        if adapter or self.adapter is None:
            yield self.model
        else:
            with self.model.disable_adapter():
                yield self.model

    # -- scoring -----------------------------------------------------------------------------------

    def encode(self, prompt: str, answer: str) -> tuple[list[int], int]:
        """Token ids of prompt + answer + EOS (as TRL tokenizes them) and where the answer starts."""
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        full = self.tokenizer(prompt + answer + self.tokenizer.eos_token)["input_ids"]
        start = common_prefix(prompt_ids, full)
        return full[: self.max_length], start

    @torch.no_grad()
    def answer_logps(self, pairs: Sequence[tuple[str, str]], adapter: bool) -> list[tuple[float, int]]:
        """Summed log-prob of each answer given its prompt, and its token count (truncated at max_length)."""
        encoded = [self.encode(p, a) for p, a in pairs]
        pad = self.tokenizer.pad_token_id
        out: list[tuple[float, int]] = []
        with self.using(adapter) as model:
            for i in range(0, len(encoded), self.batch_size):
                batch = encoded[i : i + self.batch_size]
                width = max(len(ids) for ids, _ in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (seq, _) in enumerate(batch):
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                logits = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for row, (seq, start) in enumerate(batch):  # one row at a time: fp32 vocab-wide log-softmax is big
                    first = max(start - 1, 0)  # logits at t predict token t + 1: the answer's targets start..len-1
                    logps = logits[row, first : len(seq) - 1].float().log_softmax(-1)
                    targets = ids[row, first + 1 : len(seq)].to(self.device)
                    span = logps.gather(-1, targets[:, None])[:, 0]
                    out.append((float(span.sum()), int(span.numel())))
        return out

    def n_truncated(self, rows: Sequence[dict[str, str]]) -> int:
        """Pairs in which max_length cuts the chosen or the rejected answer (scored on what is left of it)."""
        eos = self.tokenizer.eos_token

        def cut(prompt: str, answer: str) -> bool:
            return len(self.tokenizer(prompt + answer + eos)["input_ids"]) > self.max_length

        return sum(cut(r["prompt"], r["chosen"]) or cut(r["prompt"], r["rejected"]) for r in rows)

    def pair_logps(self, rows: Sequence[dict[str, str]], adapter: bool) -> list[PairLogps]:
        pairs = [(r["prompt"], r[k]) for r in rows for k in ("chosen", "rejected")]
        scores = self.answer_logps(pairs, adapter)
        return [(*scores[2 * i], *scores[2 * i + 1]) for i in range(len(rows))]

    def choice_scores(self, items: Sequence[dict[str, Any]], adapter: bool) -> dict[str, Any]:
        """Log-likelihood of each option's text as the answer to the (chat-rendered) question."""
        pairs, sizes = [], []
        for it in items:
            prompt = self.render("", it["question"])
            pairs += [(prompt, option) for option in it["options"]]
            sizes.append(len(it["options"]))
        flat = self.answer_logps(pairs, adapter)
        scores, at = [], 0
        for k in sizes:
            scores.append(flat[at : at + k])
            at += k
        return choice_metrics(scores, [it["answer"] for it in items])

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, adapter: bool) -> list[dict[str, Any]]:
        """Greedy answers, one prompt at a time (no padding to get wrong); n_tokens excludes EOS."""
        eos, out = self.tokenizer.eos_token_id, []
        with self.using(adapter) as model:
            for prompt in prompts:
                ids = self.tokenizer(prompt, return_tensors="pt").to(self.device)
                gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, top_p=None,
                                     top_k=None, temperature=None, pad_token_id=self.tokenizer.pad_token_id,
                                     eos_token_id=eos)  # fmt: skip
                new = gen[0, ids["input_ids"].shape[1] :].tolist()
                n = new.index(eos) if eos in new else len(new)
                out.append({"answer": self.tokenizer.decode(new[:n], skip_special_tokens=True), "n_tokens": n})
        return out


# ---------------------------------------------------------------------------------------------
# Jobs: plain data in, plain records out (inline in the driver, or one Ray task per trial)
# ---------------------------------------------------------------------------------------------


def evaluate_job(ev: Evaluator, job: dict[str, Any], data: dict[str, Any],
                 reference: list[PairLogps] | None) -> dict[str, Any]:  # fmt: skip
    """One model (the base when ``job["adapter"]`` is None) on what the job asks: ``preference``, ``choices``,
    ``generate``. ``reference``: the base's pair log-probs, for DPO's implicit reward."""
    started = time.monotonic()
    is_trial = job.get("adapter") is not None
    if is_trial:
        ev.activate(job["key"], Path(job["adapter"]))
    record: dict[str, Any] = {"status": "evaluated", "key": job["key"]}
    if job.get("preference", True):
        reuse = not is_trial and reference is not None  # the base's own log-probs are the reference
        policy = reference if reuse else ev.pair_logps(data["rows"], adapter=is_trial)
        record["preference"] = preference_metrics(policy, reference if is_trial else None, job.get("beta"))
        record["preference"]["n_truncated"] = ev.n_truncated(data["rows"])
    if job.get("choices", True) and data.get("sets"):
        record["multiple_choice"] = {name: ev.choice_scores(items, adapter=is_trial)
                                     for name, items in data["sets"].items()}  # fmt: skip
    if job.get("generate") and data.get("prompts"):
        samples = ev.generate([p["prompt"] for p in data["prompts"]], data["max_new_tokens"], adapter=is_trial)
        record["samples"] = samples
        record["generation"] = generation_metrics(samples, data["max_new_tokens"])
    record["seconds"] = round(time.monotonic() - started, 3)
    record["device"] = "cuda" if use_cuda() else "cpu"
    record["torch_threads"] = ev.threads
    return record


def run_jobs(payload: dict[str, Any], on_record: Any = None) -> list[dict[str, Any]]:
    """Load the base once, then run every job of ``payload`` (``model``, ``bf16``, ``max_length``, ``batch_size``,
    ``cpus``, ``data``, ``jobs``); a job's ``files`` (adapter file name → bytes) stand in for its folder on another
    node. The base's pair log-probs are computed first when any trial job needs them as its reference.
    ``on_record(record)`` is called as each job ends (the inline evaluation's progress lines)."""
    started = time.monotonic()
    ev = Evaluator(payload["model"], payload["max_length"], payload["batch_size"], payload.get("cpus", 1),
                   payload.get("bf16"))  # fmt: skip
    load_s = time.monotonic() - started
    data = payload["data"]
    with tempfile.TemporaryDirectory(prefix="sweeper-eval-") as work:
        jobs = [_unpack(job, Path(work)) for job in payload["jobs"]]
        trials = [j for j in jobs if j.get("adapter") is not None]
        if trials:
            # Once PEFT wraps a 4-bit base, the disabled-adapter path differs from the bare base in the last float
            # bits (measured: 1e-3 in a summed log-prob): wrap first, so base, reference and trials share one path.
            ev.activate(trials[0]["key"], Path(trials[0]["adapter"]))
        needs_ref = any(j.get("preference", True) for j in trials)
        reference = ev.pair_logps(data["rows"], adapter=False) if needs_ref else None
        records = []
        for job in jobs:
            records.append(_guarded(ev, job, data, reference))
            if on_record is not None:
                on_record(records[-1])
    for r in records:
        r["load_s"] = round(load_s, 3)
    return records


def _guarded(ev: Evaluator, job: dict[str, Any], data: dict[str, Any],
             reference: list[PairLogps] | None) -> dict[str, Any]:  # fmt: skip
    """A trial whose evaluation raises (a corrupt adapter, out of memory) is recorded as such; the others go on."""
    if job.get("adapter") is None:
        return evaluate_job(ev, job, data, reference)  # without the base there is nothing to compare with
    try:
        return evaluate_job(ev, job, data, reference)
    except Exception as exc:  # safetensors, PEFT and CUDA raise many types; like a failed Ray trial, it is a result
        first = first_line(exc)
        return {"status": "error", "key": job["key"], "reason": f"{type(exc).__name__}: {first}"}


def _unpack(job: dict[str, Any], work: Path) -> dict[str, Any]:
    """A job whose adapter came as bytes (another node): written to a folder of its own."""
    if not job.get("files"):
        return job
    folder = work / job["key"]
    folder.mkdir(parents=True)
    for name, blob in job["files"].items():
        (folder / name).write_bytes(blob)
    return {**job, "adapter": str(folder), "files": None}
