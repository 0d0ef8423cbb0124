"""Baseline masks and the N:M pattern: ALGORITHM.md §6 "Baselines", §9 T4."""

from __future__ import annotations

import pytest
import torch

from solver.errors import RunError
from solver.math.masks import (
    apply_mask,
    magnitude_mask,
    nm_mask,
    prune_count,
    row_density_histogram,
    smallest_mask,
    wanda_mask,
)


def _weight(seed: int = 0, n: int = 12, k: int = 40) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def test_prune_count_is_robust_to_float_error() -> None:
    assert prune_count(100, 0.29) == 29
    assert prune_count(10, 0.7) == 7
    assert prune_count(7, 0.5) == 3
    assert prune_count(5, 0.0) == 0
    assert prune_count(5, 1.0) == 5


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_prunes_the_smallest_over_the_layer(sparsity: float) -> None:
    weight = _weight()
    mask = magnitude_mask(weight, sparsity)
    assert mask.dtype == torch.bool and mask.shape == weight.shape
    assert int(mask.sum()) == prune_count(weight.numel(), sparsity)
    if sparsity > 0:
        assert weight.abs()[mask].max() <= weight.abs()[~mask].min()
        per_row = mask.sum(dim=1)
        assert per_row.max() != per_row.min()  # layer-wide, not per row


def test_magnitude_count_is_exact_with_ties() -> None:
    weight = torch.ones(8, 10)
    weight[0, :3] = 0.5
    mask = magnitude_mask(weight, 0.5)
    assert int(mask.sum()) == 40
    assert mask[0, :3].all()
    assert int(smallest_mask(torch.zeros(3, 3), 4).sum()) == 4


def test_wanda_prunes_the_same_count_in_every_row() -> None:
    weight = _weight(1)
    col = torch.rand(40, generator=torch.Generator().manual_seed(2)) * 10
    mask = wanda_mask(weight, col, 0.5)
    assert torch.all(mask.sum(dim=1) == 20)
    scores = weight.abs() * col.sqrt()
    for row in range(weight.shape[0]):
        assert scores[row][mask[row]].max() <= scores[row][~mask[row]].min()
    # The scale of the column norms does not matter.
    assert torch.equal(wanda_mask(weight, col * 7.5, 0.5), mask)
    # ...but the norms do: a loud channel is kept.
    loud = col.clone()
    loud[3] = 1e6
    assert not wanda_mask(weight, loud, 0.5)[:, 3].any()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_nm_gives_exactly_n_zeros_per_group(n: int, m: int) -> None:
    weight = _weight(3, n=10, k=32)
    for mask in (
        nm_mask(weight.abs(), n, m),
        magnitude_mask(weight, 0.5, nm=(n, m)),
        wanda_mask(weight, torch.rand(32), 0.5, nm=(n, m)),
    ):
        assert torch.all(mask.reshape(10, -1, m).sum(dim=2) == n)
    ties = nm_mask(torch.ones(3, 16), n, m)
    assert torch.all(ties.reshape(3, -1, m).sum(dim=2) == n)
    # the n smallest of each group
    mask = nm_mask(weight.abs(), n, m)
    groups, gmask = weight.abs().reshape(-1, m), mask.reshape(-1, m)
    for g, gm in zip(groups, gmask, strict=True):
        assert g[gm].max() <= g[~gm].min()


def test_nm_needs_a_matching_width() -> None:
    with pytest.raises(RunError, match="multiples of 4"):
        nm_mask(torch.rand(3, 10), 2, 4)
    with pytest.raises(ValueError):
        nm_mask(torch.rand(3, 8), 4, 4)


def test_apply_mask_returns_a_zeroed_copy() -> None:
    weight = _weight(4)
    mask = magnitude_mask(weight, 0.5)
    pruned = apply_mask(weight, mask)
    assert torch.all(pruned[mask] == 0)
    assert torch.equal(pruned[~mask], weight[~mask])
    assert not torch.all(weight[mask] == 0)  # the input is untouched


def test_row_density_histogram() -> None:
    weight = torch.ones(6, 10)
    weight[0] = 0  # density 0.0
    weight[1, :5] = 0  # 0.5
    weight[2, :5] = 0  # 0.5
    weight[3, :1] = 0  # 0.9
    counts, edges = row_density_histogram(weight, bins=10)
    assert isinstance(counts, list) and isinstance(edges, list)
    assert all(isinstance(c, int) for c in counts)
    assert len(edges) == 11 and edges[0] == 0.0 and edges[-1] == 1.0
    assert sum(counts) == 6
    assert counts[0] == 1 and counts[5] == 2 and counts[9] == 3  # 0.9 and two full rows
    counts20, edges20 = row_density_histogram(weight)
    assert len(counts20) == 20 and len(edges20) == 21 and counts20[10] == 2
