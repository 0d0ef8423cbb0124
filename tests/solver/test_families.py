"""Issue 11: every decoder family the issue names, as a tiny random model, end to end.

For each family: the discovered blocks and groups, the block-stack parity of the captured inputs
(running the captured block inputs through the blocks reproduces the model's logits), and
``duogpt prune --model DIR`` with DuoGPT and SparseGPT at W50% + X50% followed by
``duogpt eval`` of the run directory; the same for a bfloat16 copy with DuoGPT.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.io.models import load_model
from solver.run.adapters import find_adapter, layer_type
from solver.run.capture import capture_stack_inputs, run_block
from solver.run.discovery import layer_weight
from tests.cli.conftest import Cli
from tests.cli.test_cli import one_json
from tests.solver.families import FAMILIES, MOE, save_tiny, tiny_model, write_texts

ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
LLAMA = (ATTENTION, ("self_attn.o_proj",), ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))
EXPERTS = tuple(
    tuple(f"mlp.experts.{e}.{param}" for e in range(4)) for param in ("gate_up_proj", "down_proj")
)

GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo2"), LLAMA),
    **dict.fromkeys(("gemma2", "gemma3_text"), LLAMA),
    "phi3": (("self_attn.qkv_proj",), ("self_attn.o_proj",), ("mlp.gate_up_proj",), LLAMA[3]),
    "gpt2": (("attn.c_attn",), ("attn.c_proj",), ("mlp.c_fc",), ("mlp.c_proj",)),
    "opt": (ATTENTION, ("self_attn.out_proj",), ("fc1",), ("fc2",)),
    "gpt_neox": (
        ("attention.query_key_value",),
        ("attention.dense",),
        ("mlp.dense_h_to_4h",),
        ("mlp.dense_4h_to_h",),
    ),
    # parallel attention: the attention and the MLP read the same normalised input
    "falcon": (
        ("self_attention.query_key_value", "mlp.dense_h_to_4h"),
        ("self_attention.dense",),
        ("mlp.dense_4h_to_h",),
    ),
    "starcoder2": (ATTENTION, ("self_attn.o_proj",), ("mlp.c_fc",), ("mlp.c_proj",)),
    "mixtral": (ATTENTION, ("self_attn.o_proj",), *EXPERTS),
    "qwen3_moe": (ATTENTION, ("self_attn.o_proj",), *EXPERTS),
}

BLOCKS = {"gpt2": "transformer.h", "falcon": "transformer.h", "opt": "model.decoder.layers"}
BLOCKS["gpt_neox"] = "gpt_neox.layers"

RELU = frozenset({"opt"})
"""Families whose MLP activation is a ReLU: its output is already partly zero, so the measured
activation sparsity of the layer after it is a little above the target."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each family's tiny model saved with ``save_pretrained`` (made on first use), and two
    short texts (``calib``, ``eval``: :func:`~tests.solver.families.write_texts`)."""
    return write_texts(tmp_path_factory.mktemp("texts"))


def saved(folders: dict[str, Path], tmp: pytest.TempPathFactory, family: str, dtype: str) -> Path:
    key = f"{family}-{dtype}"
    if key not in folders:
        folders[key] = save_tiny(family, tmp.mktemp(key), dtype=getattr(torch, dtype))
    return folders[key]


def test_every_family_of_the_issue_has_a_table_row() -> None:
    assert set(GROUPS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_discovered_blocks_and_groups(family: str) -> None:
    model = tiny_model(family)
    adapter = find_adapter(model)
    assert adapter.family == family
    assert adapter.path == BLOCKS.get(family, "model.layers")
    for index in range(len(adapter.blocks())):
        assert tuple(g.names for g in adapter.block_groups(index)) == GROUPS[family]
    routers = [name for name in adapter.all_linears() if name.endswith((".gate", ".router"))]
    assert routers == []
    types = {layer_type(name) for name in adapter.linears(adapter.blocks()[0])}
    assert types <= {"q", "k", "v", "o", "qkv", "gate", "up", "down", "gate_up", "fc1", "fc2"} | {
        "experts"
    }
    assert not adapter.skipped


def test_llama_groups_are_q_k_v_then_o_then_gate_up_then_down() -> None:
    adapter = find_adapter(load_model("tiny-random").model)
    assert adapter.groups == LLAMA
    assert adapter.layer_names == tuple(name for group in LLAMA for name in group)


def _last_block_swapped(model: nn.Module, block: nn.Module, states: torch.Tensor) -> Any:
    """The model's logits with the last block's output replaced by ``states``."""

    def swap(_module: nn.Module, _args: Any, out: Any) -> Any:
        return (states, *out[1:]) if isinstance(out, tuple) else states

    handle = block.register_forward_hook(swap)
    try:
        return model(input_ids=IDS, use_cache=False).logits
    finally:
        handle.remove()


IDS = torch.randint(1, 259, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", FAMILIES)
def test_block_stack_reproduces_the_logits(family: str) -> None:
    model = tiny_model(family)
    with torch.no_grad():
        reference = model(input_ids=IDS, use_cache=False).logits  # the model's own experts code
        adapter = find_adapter(model)
        blocks = adapter.blocks()
        hidden, calls = capture_stack_inputs(model, blocks, [IDS])
        states = hidden[0]
        for index, block in enumerate(blocks):
            states = run_block(block, states, calls[index][0])
        logits = _last_block_swapped(model, blocks[-1], states)
    assert (logits - reference).abs().max() <= 1e-4
    # the swap is what the logits come from: other hidden states give other logits
    assert (_last_block_swapped(model, blocks[-1], states.flip(1)) - reference).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_sliding_and_full_attention_blocks_get_their_own_masks(family: str) -> None:
    model = tiny_model(family)
    adapter = find_adapter(model)
    _, calls = capture_stack_inputs(model, adapter.blocks(), [IDS])
    sliding, full = calls[0][0].kwargs["attention_mask"], calls[1][0].kwargs["attention_mask"]
    assert isinstance(sliding, torch.Tensor)
    assert full is None or not torch.equal(sliding, full)  # None: plain causal attention
    assert calls[2][0].kwargs["attention_mask"] is sliding  # shared inputs are kept once


def _prunable_sparsity(model_dir: Path) -> float:
    """Zero fraction over every prunable weight of a saved model, found again from scratch."""
    loaded = load_model(str(model_dir))
    layers = find_adapter(loaded.model).all_linears()
    zeros = sum(int((layer_weight(m) == 0).sum()) for m in layers.values())
    return zeros / sum(layer_weight(m).numel() for m in layers.values())


def _prune(
    cli: Cli, folders: dict[str, Path], folder: Path, method: str, dtype: str
) -> tuple[dict[str, Any], Path]:
    out = f"run-{method}-{dtype}"
    result = cli(
        "prune", "--model", str(folder), "--method", method, "--dtype", dtype,
        "--calib", str(folders["calib"]), "--eval", str(folders["eval"]),
        "--weight-sparsity", "0.5", "--act-sparsity", "0.5", "--nsamples", "4",
        "--seqlen", "32", "--eval-windows", "2", "--batch-size", "2", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return one_json(result.stdout), cli.root / out


@pytest.mark.parametrize("method", ["duogpt", "sparsegpt"])
@pytest.mark.parametrize("family", FAMILIES)
def test_prune_and_eval_every_family(
    family: str,
    method: str,
    folders: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = Cli(tmp_path, monkeypatch, fake=False)
    folder = saved(folders, tmp_path_factory, family, "float32")
    data, run = _prune(cli, folders, folder, method, "float32")
    assert data["status"] == "finished"
    assert data["weight_sparsity"] == 0.5
    assert _prunable_sparsity(run / "model") == 0.5
    if family in RELU:
        assert 0.5 <= data["act_sparsity"] < 0.52
    else:
        assert data["act_sparsity"] == pytest.approx(0.5, abs=1e-9)
    assert math.isfinite(data["ppl"]) and data["ppl"] > 1
    events = RunDir.open(run).events()
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.family == family
    solved = [e for e in events if isinstance(e, ev.LayerSolved)]
    assert all(e.weight_sparsity == 0.5 for e in solved)
    notes = [e.text for e in events if isinstance(e, ev.Note)]
    assert any(text.startswith(f"{family}: ") and "groups [" in text for text in notes)
    report = (run / "report.md").read_text()
    assert f"{family}: {started.n_blocks} blocks in" in report  # the family and its groups
    if family in MOE:
        assert sum("calibration tokens per expert" in text for text in notes) == 2
        assert "calibration tokens per expert" in report
    evaluated = cli("eval", str(run), "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    again = one_json(evaluated.stdout)
    assert again["ppl"] == pytest.approx(data["ppl"], rel=1e-6)
    assert again["act_sparsity"] == pytest.approx(data["act_sparsity"], abs=1e-9)
    settings = json.loads((run / "model" / "activation_sparsity.json").read_text())
    assert len(settings["layers"]) == started.n_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_copy_of_every_family(
    family: str,
    folders: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    cli = Cli(tmp_path, monkeypatch, fake=False)
    folder = saved(folders, tmp_path_factory, family, "bfloat16")
    data, run = _prune(cli, folders, folder, "duogpt", "bfloat16")
    assert data["weight_sparsity"] == 0.5
    assert math.isfinite(data["ppl"]) and data["ppl"] > 1
    events = RunDir.open(run).events()
    assert next(e for e in events if isinstance(e, ev.RunStarted)).dtype == "bfloat16"


class _StopAfterBlock0:
    """A cancel token that is set once block 0 is finished."""

    def __init__(self) -> None:
        self.set = False

    def is_set(self) -> bool:
        return self.set


@pytest.mark.parametrize("family", ["gpt2", "mixtral"])
def test_resume_restores_conv1d_and_expert_slices(
    family: str, folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from duogpt_tui.runner import stream
    from solver.config import RunConfig

    folder = saved(folders, tmp_path_factory, family, "float32")
    config = RunConfig(
        model=str(folder),
        calib=str(folders["calib"]),
        eval=str(folders["eval"]),
        nsamples=4,
        seqlen=32,
        eval_windows=2,
        batch_size=2,
        eval_dense=False,
    )
    whole = [e for e in stream(config) if isinstance(e, ev.PerplexityMeasured)]
    token = _StopAfterBlock0()
    workdir = tmp_path / "run"
    for event in stream(config.replace(checkpoints=True), token, workdir):
        if isinstance(event, ev.BlockFinished) and event.block == 0:
            token.set = True
    assert isinstance(event, ev.Cancelled), event
    resumed = [
        e
        for e in stream(config.replace(checkpoints=True), workdir=workdir, resume=True)
        if isinstance(e, ev.PerplexityMeasured)
    ]
    assert resumed[-1].ppl == pytest.approx(whole[-1].ppl, rel=1e-6)
