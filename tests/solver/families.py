"""Tiny random models of every decoder family the issue names, built offline from their configs.

Each has 2 blocks (3 for the families that alternate attention types), hidden size 64, a
260-token vocabulary that matches the byte-level tokenizer of ``tiny-random``, and even layer
widths, so that top-k activation sparsity at 50% is exactly 50%.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from solver.io.models import _byte_level_tokenizer, quiet_transformers

FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "gpt2",
    "opt",
    "gpt_neox",
    "falcon",
    "starcoder2",
    "olmo2",
    "mixtral",
    "qwen3_moe",
)
"""The families of issue 11, by ``model_type``."""

MOE = frozenset({"mixtral", "qwen3_moe"})

_COMMON: dict[str, Any] = {
    "vocab_size": 260,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}

_SPECIFIC: dict[str, dict[str, Any]] = {
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16, "num_hidden_layers": 3, "sliding_window": 8},
    "gemma3_text": {"head_dim": 16, "num_hidden_layers": 3, "sliding_window": 8},
    "mistral": {"sliding_window": 8},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256, "n_inner": 128},
    "opt": {"ffn_dim": 128, "word_embed_proj_dim": 64, "num_key_value_heads": None},
    "gpt_neox": {"num_key_value_heads": None},
    "falcon": {"num_key_value_heads": None, "num_kv_heads": 1},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 32},
    "qwen3_moe": {
        "head_dim": 16,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
    },
}


def config_kwargs(family: str) -> dict[str, Any]:
    """The config arguments of the tiny model of ``family``."""
    kwargs = {**_COMMON, **_SPECIFIC.get(family, {})}
    if family == "gpt2":
        kwargs = {k: v for k, v in kwargs.items() if k not in _COMMON or k == "vocab_size"}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if family in ("gemma2", "gemma3_text"):
        kwargs["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention"]
    tokenizer = _byte_level_tokenizer()
    kwargs.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return kwargs


def tiny_model(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A seeded tiny random model of ``family`` (eval mode, no gradients)."""
    config = AutoConfig.for_model(family, **config_kwargs(family))
    with torch.random.fork_rng(devices=[]), quiet_transformers():
        torch.manual_seed(seed)
        model = cast(
            PreTrainedModel,
            AutoModelForCausalLM.from_config(config, dtype=dtype),  # type: ignore[no-untyped-call]
        )
    module: torch.nn.Module = model
    module.eval()
    module.requires_grad_(False)
    return model


def save_tiny(family: str, folder: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Save the tiny model of ``family`` and the byte-level tokenizer into ``folder``."""
    model = tiny_model(family, dtype=dtype)
    with quiet_transformers():
        model.save_pretrained(folder)
        _byte_level_tokenizer().save_pretrained(folder)
    return folder


TEXT_BYTES = 16_000
"""How much of each built-in text the tiny runs read (tokenising whole books costs seconds)."""


def write_texts(folder: Path) -> dict[str, Path]:
    """The first :data:`TEXT_BYTES` characters of the built-in calibration and evaluation
    texts, as ``.txt`` files in ``folder``: ``{"calib": ..., "eval": ...}``."""
    from solver.io.data import load_text

    texts = {}
    for key, name in (("calib", "sotu"), ("eval", "moby-dick")):
        texts[key] = folder / f"{name}.txt"
        texts[key].write_text(load_text(name)[1][:TEXT_BYTES], encoding="utf-8")
    return texts
