"""Issue 11: layouts that cannot be pruned are refused early, with one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from solver.errors import InputError
from solver.io import inputs
from solver.run.adapters import find_adapter, layer_type
from tests.cli.conftest import Cli
from tests.cli.test_cli import one_error_line


def _gguf(path: Path, architecture: str) -> Path:
    """A small, complete GGUF file of ``architecture`` (one tensor)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ("t5", "is a t5 model (GGUF), an encoder-decoder, not a causal language model"),
        ("rwkv6", "is a rwkv6 model (GGUF) that transformers cannot load from GGUF"),
    ],
)
def test_gguf_layouts_are_refused_from_the_header(
    tmp_path: Path, architecture: str, message: str
) -> None:
    path = _gguf(tmp_path / f"{architecture}.gguf", architecture)
    with pytest.raises(InputError) as info:
        inputs.check_model(str(path))
    assert message in str(info.value)
    assert "decoder-only" in str(info.value) or "llama" in str(info.value)


def test_a_decoder_gguf_header_passes(tmp_path: Path) -> None:
    facts = inputs.check_model(str(_gguf(tmp_path / "llama.gguf", "llama")))
    assert facts.layers == 1


def _encoder_decoder_folder(folder: Path) -> Path:
    folder.mkdir()
    config = {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        "is_encoder_decoder": True,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_encoder_decoder_folder_is_refused_by_the_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _encoder_decoder_folder(tmp_path / "bart")
    monkeypatch.chdir(tmp_path)
    cli = Cli(tmp_path, monkeypatch, fake=False)
    result = cli("prune", "--model", str(folder), "--nsamples", "2", "--seqlen", "16")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "is a bart model (BartForConditionalGeneration), an encoder-decoder" in line
    assert "decoder-only LMs such as llama" in line
    assert cli.run_dirs() == []


class _NoBlocks(nn.Module):
    """A 'language model' with no block list: one projection between embedding and head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 16)

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        out: torch.Tensor = self.head(self.proj(self.embed(input_ids)))
        return out


def test_a_model_without_a_decoder_block_list_is_refused() -> None:
    with pytest.raises(InputError) as info:
        find_adapter(_NoBlocks())
    assert "has no decoder block list" in str(info.value)


class _Shuffled(nn.Module):
    """Blocks that the forward calls out of order: they cannot be walked as a stack."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(8, 8)) for _ in range(3))

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        x: torch.Tensor = self.embed(input_ids)
        for index in (2, 0, 1):
            x = self.layers[index](x)
        return x


def test_blocks_called_out_of_order_are_refused() -> None:
    with pytest.raises(InputError) as info:
        find_adapter(_Shuffled())
    assert "no module list is called block after block" in str(info.value)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("self_attn.q_proj", "q"),
        ("self_attn.o_proj", "o"),
        ("mlp.down_proj", "down"),
        ("attn.c_attn", "qkv"),
        ("attn.c_proj", "o"),
        ("mlp.c_proj", "fc2"),
        ("self_attention.query_key_value", "qkv"),
        ("attention.dense", "o"),
        ("mlp.dense_4h_to_h", "fc2"),
        ("self_attn.out_proj", "o"),
        ("fc1", "fc1"),
        ("mlp.gate_up_proj", "gate_up"),
        ("mlp.experts.3.down_proj", "experts"),
    ],
)
def test_layer_types_group_each_familys_names(name: str, kind: str) -> None:
    assert layer_type(name) == kind
