"""Issue 11: the solver's exactness (ALGORITHM.md §9, T1-T4) holds for every weight layout.

A ``Conv1D`` stores its weight ``[in, out]``; it is solved on the transposed view and written
back in its own layout, so it must give exactly what the same layer as an ``nn.Linear`` gives
(whose solve T1-T3 check in test_obc.py). A fused projection (``qkv_proj``) is one layer with
one solve: with per-row masks it equals its parts solved on the same statistics. An expert slice
is a view of its fused parameter, and solving it writes only its slice.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from solver.config import RunConfig
from solver.math.masks import prune_count
from solver.math.obc import layer_errors
from solver.math.stats import LayerStats
from solver.run.context import RunContext
from solver.run.discovery import in_features, layer_weight
from solver.run.experts import ExpertsLayout, ExpertSlice
from solver.run.layers import solve_layer

N_OUT, N_IN, TOKENS = 12, 16, 200


def _stats(seed: int = 0, mismatch: bool = True) -> LayerStats:
    """Statistics of random inputs: ``X^`` sparse-ish, ``X~`` = ``X^`` plus a mismatch."""
    gen = torch.Generator().manual_seed(seed)
    x_sparse = torch.randn(TOKENS, N_IN, generator=gen)
    x_sparse[x_sparse.abs() < 0.3] = 0
    x_dense = x_sparse + 0.3 * torch.randn(TOKENS, N_IN, generator=gen) if mismatch else x_sparse
    stats = LayerStats.empty(N_IN)
    stats.add(x_sparse, x_dense)
    return stats


def _run(method: str, pattern: str = "unstructured") -> RunContext:
    return RunContext(RunConfig(method=method, pattern=pattern, alpha=0.5, block_size=8))


def _weight(module: nn.Module) -> torch.Tensor:
    """A module's own weight parameter, as stored."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def _linear_and_conv(seed: int = 1) -> tuple[nn.Linear, nn.Module]:
    weight = torch.randn(N_OUT, N_IN, generator=torch.Generator().manual_seed(seed))
    linear = nn.Linear(N_IN, N_OUT, bias=False)
    conv: nn.Module = Conv1D(N_OUT, N_IN)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        linear.weight.copy_(weight)
        _weight(conv).copy_(weight.T)
    return linear, conv


def _solve(run: RunContext, module: nn.Module, stats: LayerStats) -> None:
    solve_layer(run, 0, "layer", module, stats, dict.fromkeys(("solve",), 0.0))


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", ["duogpt", "sparsegpt"])
def test_conv1d_is_solved_on_its_transpose_and_kept_in_its_layout(
    method: str, pattern: str
) -> None:
    linear, conv = _linear_and_conv()
    stats = _stats()
    assert layer_weight(conv).shape == (N_OUT, N_IN) and in_features(conv) == N_IN
    _solve(_run(method, pattern), linear, stats)
    _solve(_run(method, pattern), conv, stats)
    assert _weight(conv).shape == (N_IN, N_OUT)  # its own layout
    assert torch.equal(_weight(conv).T, linear.weight)  # exactly the Linear's solve (T1-T3)
    x = torch.randn(3, 5, N_IN)
    torch.testing.assert_close(conv(x), linear(x), rtol=1e-5, atol=1e-6)


def test_conv1d_t2_no_mismatch_is_sparsegpt() -> None:
    stats = _stats(mismatch=False)
    _, duogpt = _linear_and_conv()
    _, sparsegpt = _linear_and_conv()
    _solve(_run("duogpt"), duogpt, stats)
    _solve(_run("sparsegpt"), sparsegpt, stats)
    torch.testing.assert_close(_weight(duogpt), _weight(sparsegpt), rtol=1e-5, atol=1e-6)


def test_conv1d_t4_structure() -> None:
    _, conv = _linear_and_conv()
    _solve(_run("duogpt"), conv, _stats())
    zeros_per_output = (_weight(conv) == 0).sum(dim=0)  # rows of the [out, in] view
    assert zeros_per_output.tolist() == [prune_count(N_IN, 0.5)] * N_OUT
    _, conv = _linear_and_conv()
    _solve(_run("duogpt", "2:4"), conv, _stats())
    groups = (_weight(conv).T == 0).reshape(N_OUT, N_IN // 4, 4).sum(dim=-1)
    assert bool((groups == 2).all())


def test_conv1d_t1_layer_objective_matches_the_linear() -> None:
    linear, conv = _linear_and_conv()
    stats = _stats()
    original = linear.weight.detach().clone()
    _solve(_run("duogpt"), linear, stats)
    _solve(_run("duogpt"), conv, stats)
    assert layer_errors(original, layer_weight(conv), stats) == layer_errors(
        original, linear.weight, stats
    )


def test_fused_projection_is_one_layer_equal_to_its_parts() -> None:
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(rows, N_IN, generator=gen) for rows in (8, 4, 4)]  # q, k, v
    fused = nn.Linear(N_IN, 16, bias=False)
    with torch.no_grad():
        fused.weight.copy_(torch.cat(parts))
    stats = _stats()
    run = _run("duogpt")  # per-row masks (the default mask scope)
    assert run.config.mask_scope == "row"
    _solve(run, fused, stats)
    solved = []
    for part in parts:
        layer = nn.Linear(N_IN, part.shape[0], bias=False)
        with torch.no_grad():
            layer.weight.copy_(part)
        _solve(run, layer, stats)
        solved.append(layer.weight)
    together = torch.cat(solved)
    assert torch.equal(fused.weight == 0, together == 0)  # the same masks
    torch.testing.assert_close(fused.weight, together, rtol=1e-5, atol=1e-6)
    assert bool(((fused.weight == 0).sum(dim=1) == N_IN // 2).all())  # T4 per row


class _Experts(nn.Module):
    def __init__(self, transposed: bool) -> None:
        super().__init__()
        shape = (3, N_IN, N_OUT) if transposed else (3, N_OUT, N_IN)
        self.gate_up_proj = nn.Parameter(torch.randn(shape), requires_grad=False)


@pytest.mark.parametrize("transposed", [False, True])
def test_expert_slice_is_solved_like_a_linear_and_writes_only_its_slice(transposed: bool) -> None:
    experts = _Experts(transposed)
    before = experts.gate_up_proj.detach().clone()
    layout = ExpertsLayout(3, "gate_up_proj", transposed=transposed)
    piece = ExpertSlice(experts, layout, "gate_up_proj", 1)
    linear = nn.Linear(N_IN, N_OUT, bias=False)
    with torch.no_grad():
        linear.weight.copy_(layer_weight(piece))
    stats = _stats()
    _solve(_run("duogpt"), linear, stats)
    _solve(_run("duogpt"), piece, stats)
    assert torch.equal(layer_weight(piece), linear.weight)
    after = experts.gate_up_proj.detach()
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.equal(after[1], before[1])
    x = torch.randn(5, N_IN)
    torch.testing.assert_close(piece(x), linear(x), rtol=1e-5, atol=1e-6)
