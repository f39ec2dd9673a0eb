"""The builtin tiny model: a byte-level BPE tokenizer and a 2-layer Mistral, built locally, never downloaded.

``builtin:tiny-mistral`` lets a sweep (and the end-to-end tests) run with nothing from the network. It is
built once into ``$SWEEPER_CACHE_DIR/models/tiny-mistral-v1/`` (default ``~/.cache/sweeper``), then loads
like any checkpoint: ``AutoTokenizer.from_pretrained(path)``, ``AutoModelForCausalLM.from_pretrained(path)``,
also in 4-bit. Heavy when used: tokenizers, torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sweeper.data.synthetic import BUILTIN_DATA, corpus_texts
from sweeper.errors import SweeperError
from sweeper.records.files import build_folder_once

if TYPE_CHECKING:
    from transformers import MistralForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "BUILTIN_DATA",
    "BUILTIN_MODEL",
    "build_tiny_model",
    "build_tokenizer",
    "cache_dir",
    "ensure_tiny_model",
]

BUILTIN_MODEL = "builtin:tiny-mistral"
# Bump the suffix whenever the build below changes, so old caches are not reused.
_MODEL_DIRNAME = "tiny-mistral-v1"

VOCAB_SIZE = 1000  # target; a corpus this small saturates a little below it
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>")

# Mistral-7B-Instruct-v0.2's original template, verbatim: it writes the BOS string itself and rejects a
# system role ("Conversation roles must alternate ..."), which is what the data renderer must cope with.
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# Qwen/ChatML style: accepts a system role and writes no BOS string.
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CHAT_TEMPLATES = {"mistral": MISTRAL_CHAT_TEMPLATE, "chatml": CHATML_CHAT_TEMPLATE}

# Generic English beside the synthetic corpus, so other prompts tokenize into words rather than bytes.
_GENERIC_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "You are an AI assistant. User will give you a task. Your goal is to complete the task as faithfully as "
    "you can. While performing the task think step by step and justify your steps.",
    "Translate the following sentence to English and explain the answer.",
    "Write a short summary of the article below in one or two sentences.",
    "Answer the following question with yes or no, then give a reason.",
    "Please ask me your question.",
    "Here is some information about the history of the city and the people who live there.",
    "The weather today is sunny with a light wind from the west, and it may rain tonight.",
    "She read the book in the library and wrote down the most important numbers and names.",
    "Step 1: Identify the main idea. Step 2: Find the details. Step 3: Write the final answer.",
    "What is the capital of France? The capital of France is Paris.",
    "Children learn quickly when they play games, sing songs and draw pictures with friends.",
    "The company reported higher sales this year because more customers bought its new products.",
    "Scientists study the stars, the planets and the oceans to understand how the world works.",
    "If you have any other questions, feel free to ask and I will do my best to help.",
    "Options: A) true B) false C) it is not possible to tell. The correct option is A.",
    "He walked along the river, crossed the old bridge and arrived at the small train station.",
    "Music, sports, food and travel are popular topics in conversations between new friends.",
)


def cache_dir() -> Path:
    """Where sweeper keeps what it builds: ``$SWEEPER_CACHE_DIR``, else ``~/.cache/sweeper``."""
    configured = os.environ.get("SWEEPER_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sweeper"


def _training_texts() -> list[str]:
    # The synthetic texts as they appear in both chat formats, so "[INST]" and " Please" get their own merges.
    texts = list(corpus_texts()) + list(_GENERIC_TEXTS)
    texts += [f"[INST] {text} [/INST]" for text in corpus_texts()]
    texts += [f"user\n{text}\nassistant\n" for text in corpus_texts()]
    return texts


def build_tokenizer(template: str = "mistral") -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE (~1000 tokens) that adds BOS like Mistral's, with a chat template.

    ``template="mistral"`` is Mistral-7B-Instruct-v0.2's (no system role, writes ``{{ bos_token }}``);
    ``template="chatml"`` is Qwen-style and accepts a system role.
    """
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"template must be one of {sorted(CHAT_TEMPLATES)}, but got {template=}.")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no <unk> in practice
        show_progress=False,
    )
    backend.train_from_iterator(_training_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        add_bos_token=True,  # like Mistral: tokenizer(text) starts with <s> (writes the post-processor)
        add_eos_token=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATES[template]
    return tokenizer


def build_tiny_model(tokenizer: PreTrainedTokenizerBase) -> MistralForCausalLM:
    """A 2-layer, hidden-64 ``MistralForCausalLM`` in float32, initialised from ``torch.manual_seed(0)``.

    The caller's random state is left as it was.
    """
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in the real Mistral
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MistralForCausalLM(config).to(torch.float32)


def ensure_tiny_model(name: str = BUILTIN_MODEL) -> Path:
    """The folder of the builtin model, built on first use; later calls return the cached folder at once.

    The build goes to a temporary folder beside the target and is renamed into place, so a concurrent
    process never sees half a model; if another process finished first, its copy is kept.
    """
    if name != BUILTIN_MODEL:
        raise SweeperError(f"unknown builtin model {name!r}; use {BUILTIN_MODEL!r}, a Hub id or a local path")

    def build(staging: Path) -> None:
        tokenizer = build_tokenizer("mistral")
        tokenizer.save_pretrained(staging)
        build_tiny_model(tokenizer).save_pretrained(staging)

    return build_folder_once(cache_dir() / "models" / _MODEL_DIRNAME, build, _is_complete)


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
