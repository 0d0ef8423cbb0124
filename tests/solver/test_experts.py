"""Issue 11: MoE blocks with fused experts (Mixtral, Qwen3-MoE) pruned expert by expert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers.models.mixtral import modeling_mixtral

from duogpt_tui.runner import stream
from solver.config import RunConfig
from solver.events import Event, Finished, LayerSolved, Note
from solver.math.activations import ActivationSparsifier
from solver.run import experts, methods, routed
from solver.run.adapters import find_adapter
from tests.solver.families import save_tiny, tiny_model, write_texts

CONFIG = {
    "nsamples": 4,
    "seqlen": 32,
    "eval_windows": 1,
    "batch_size": 2,
    "eval_dense": False,
}


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Mixtral, with the short texts next to it."""
    folder = save_tiny("mixtral", tmp_path_factory.mktemp("mixtral") / "model")
    write_texts(folder.parent)
    return folder


def _events(folder: Path, **overrides: Any) -> list[Event]:
    texts = {"calib": str(folder.parent / "sotu.txt"), "eval": str(folder.parent / "moby-dick.txt")}
    return list(stream(RunConfig(model=str(folder), **{**CONFIG, **texts, **overrides})))


@pytest.mark.parametrize("family", ["mixtral", "qwen3_moe"])
@pytest.mark.parametrize("implementation", ["eager", "grouped_mm"])
def test_slices_compute_what_the_experts_module_computes(family: str, implementation: str) -> None:
    model = tiny_model(family)
    model.config._experts_implementation = implementation
    module = model.model.layers[0].mlp.experts
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(10, 64, generator=gen)
    index = torch.stack([torch.randperm(4, generator=gen)[:2] for _ in range(10)])
    weights = torch.rand(10, 2, generator=gen)
    with torch.no_grad():
        expected = module(hidden, index, weights)
        find_adapter(model)  # makes the experts prunable: slices and the eager forward
        got = module(hidden, index, weights)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert "gate_up_proj" in dict(module.named_parameters())  # the state dict is unchanged
    assert not any("experts.0" in name for name, _ in model.named_modules())


def test_activation_sparsity_reaches_the_expert_inputs() -> None:
    model = tiny_model("qwen3_moe")
    layers = find_adapter(model).all_linears()
    slices = [name for name in layers if ".experts." in name]
    assert len(slices) == 2 * 2 * 4  # blocks x sides x experts
    with ActivationSparsifier(0.5).attach(layers) as sparsifier, torch.no_grad():
        model(input_ids=torch.arange(1, 33).unsqueeze(0), use_cache=False)
        measured = sparsifier.measured()
    seen = [measured[name] for name in slices if sparsifier._entries[name]]
    assert seen and all(value == 0.5 for value in seen)


def test_fallback_method_by_routed_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(experts, "MIN_EXPERT_TOKENS", 10)
    duogpt, wanda = methods.get("duogpt"), methods.get("wanda")
    assert routed.fallback(duogpt, 10) is duogpt
    assert routed.fallback(duogpt, 9).name == "wanda"
    assert routed.fallback(duogpt, 0).name == "magnitude"
    assert routed.fallback(wanda, 3) is wanda
    assert routed.fallback(wanda, 0).name == "magnitude"
    assert routed.fallback(methods.get("magnitude"), 0).name == "magnitude"


def test_thin_experts_fall_back_to_wanda_with_a_note(
    mixtral: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(experts, "MIN_EXPERT_TOKENS", 10**6)
    events = _events(mixtral)
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.weight_sparsity == 0.5
    warnings = [e.text for e in events if isinstance(e, Note) and e.level == "warning"]
    fallbacks = [text for text in warnings if "without the second-order solve" in text]
    assert len(fallbacks) == 4  # two blocks, two sides
    assert "0.gate_up_proj (" in fallbacks[0] and ": wanda)" in fallbacks[0]


def test_router_choice_decides_the_tokens_and_idle_experts_use_magnitude(
    mixtral: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router that always picks experts 0 and 1 leaves 2 and 3 without calibration tokens."""

    def route(self: Any, hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        logits = torch.nn.functional.linear(hidden_states, self.weight)
        index = torch.tensor([[0, 1]]).expand(hidden_states.shape[0], 2)
        return logits, torch.full(index.shape, 0.5), index

    monkeypatch.setattr(modeling_mixtral.MixtralTopKRouter, "forward", route)
    events = _events(mixtral, act_rule="threshold")
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.weight_sparsity == 0.5
    notes = [e.text for e in events if isinstance(e, Note)]
    assert "block 0 mlp.experts: calibration tokens per expert 128, 128, 0, 0" in " ".join(notes)
    idle = [text for text in notes if "2.gate_up_proj (0: magnitude)" in text]
    assert len(idle) == 2  # one per block
    solved = {e.name: e for e in events if isinstance(e, LayerSolved) and e.block == 0}
    assert solved["mlp.experts.2.down_proj"].weight_sparsity == 0.5


def test_the_router_is_never_pruned(mixtral: Path) -> None:
    original = tiny_model("mixtral").model.layers[0].mlp.gate.weight.detach().clone()
    holder: dict[str, Any] = {}
    from solver.io import models

    load = models.load_model

    def keep(*args: Any, **kwargs: Any) -> Any:
        holder["loaded"] = load(*args, **kwargs)
        return holder["loaded"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "load_model", keep)
        events = _events(mixtral, eval_windows=0)
    assert isinstance(events[-1], Finished)
    router = holder["loaded"].model.model.layers[0].mlp.gate.weight
    assert torch.equal(router, original)
    names = [e.name for e in events if isinstance(e, LayerSolved)]
    assert not any(name.endswith("mlp.gate") for name in names)
