"""Pruning masks of the baselines and the N:M pattern (ALGORITHM.md §6 "Baselines", §9 T4).

A mask is a bool tensor of the weight's shape, ``True`` where a weight is pruned (set to zero).

* magnitude: the smallest ``|W|`` over the whole layer;
* Wanda: the smallest ``|W_ij| * ||X_j||`` compared within each output row;
* N:M: in every group of M consecutive input columns of a row, the N smallest scores.

Counts are exact (``floor(total * sparsity)``, ties broken by position), so achieved sparsity
equals the target whatever the ties.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from solver.errors import RunError


def prune_count(total: int, sparsity: float) -> int:
    """``floor(total * sparsity)``, robust to float error (``0.29 * 100`` gives 29, not 28)."""
    return max(0, min(total, math.floor(total * sparsity + 1e-9)))


def smallest_mask(scores: Tensor, count: int) -> Tensor:
    """Bool mask of exactly ``count`` smallest entries of ``scores`` (any shape, ties by position).

    Uses ``kthvalue`` (linear time, no size limit) and fills ties in flattened order.
    """
    flat = scores.reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if count <= 0:
        return mask.view(scores.shape)
    if count >= flat.numel():
        return mask.fill_(True).view(scores.shape)
    kth = torch.kthvalue(flat, count).values
    mask = flat < kth
    missing = count - int(mask.sum().item())
    if missing > 0:
        ties = torch.nonzero(flat == kth).reshape(-1)[:missing]
        mask[ties] = True
    return mask.view(scores.shape)


def rowwise_smallest_mask(scores: Tensor, count: int) -> Tensor:
    """Bool mask of exactly ``count`` smallest entries in every row (last dimension)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if count <= 0:
        return mask
    idx = torch.topk(scores, count, dim=-1, largest=False).indices
    return mask.scatter_(-1, idx, True)


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Per row, in each group of ``m`` consecutive columns, the ``n`` smallest scores (N:M).

    Args:
        scores: ``(rows, k)`` scores, smaller = pruned first; ``k`` must be a multiple of ``m``.
        n: zeros per group.
        m: group width.

    Raises:
        RunError: ``k`` is not a multiple of ``m``.
    """
    k = scores.shape[-1]
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
    if k % m:
        raise RunError(
            f"the {n}:{m} pattern needs layer widths that are multiples of {m}, "
            f"but a layer has {k} inputs; use --pattern unstructured"
        )
    groups = scores.reshape(-1, m)  # (rows * k/m, m)
    return rowwise_smallest_mask(groups, n).view(scores.shape)


def magnitude_mask(weight: Tensor, sparsity: float, nm: tuple[int, int] | None = None) -> Tensor:
    """Magnitude pruning: the ``sparsity`` fraction of smallest ``|W|`` over the whole layer.

    Args:
        weight: ``(n, k)`` weight.
        sparsity: fraction to prune (ignored for N:M).
        nm: ``(N, M)`` for N zeros in every M consecutive inputs of a row.
    """
    scores = weight.detach().abs()
    if nm is not None:
        return nm_mask(scores, *nm)
    return smallest_mask(scores, prune_count(scores.numel(), sparsity))


def wanda_mask(
    weight: Tensor, col_sq_norm: Tensor, sparsity: float, nm: tuple[int, int] | None = None
) -> Tensor:
    """Wanda: score ``|W_ij| * ||X_j||``, compared within each output row.

    Args:
        weight: ``(n, k)`` weight.
        col_sq_norm: length-``k`` squared input norms per channel (``diag(H)`` works: the scale
            does not matter).
        sparsity: fraction pruned in every row (each row loses ``floor(k * sparsity)``).
        nm: ``(N, M)`` for N zeros in every M consecutive inputs of a row.
    """
    norm = col_sq_norm.detach().to(device=weight.device, dtype=torch.float32).clamp_min(0).sqrt()
    scores = weight.detach().abs().float() * norm.reshape(1, -1)
    if nm is not None:
        return nm_mask(scores, *nm)
    return rowwise_smallest_mask(scores, prune_count(scores.shape[-1], sparsity))


def apply_mask(weight: Tensor, mask: Tensor) -> Tensor:
    """A copy of ``weight`` with the masked entries set to zero."""
    return weight.masked_fill(mask, 0)


def row_density_histogram(weight: Tensor, bins: int = 20) -> tuple[list[int], list[float]]:
    """Histogram of per-output-row density (fraction of non-zero weights).

    Args:
        weight: ``(n, k)`` weight.
        bins: equal bins over ``[0, 1]``; a density of exactly 1 goes into the last bin.

    Returns:
        ``(counts, edges)`` as plain lists; ``edges`` has ``bins + 1`` values.
    """
    w = weight.detach().reshape(weight.shape[0], -1)
    nonzero = torch.count_nonzero(w, dim=1)  # (n,)
    idx = (nonzero * bins).div(max(1, w.shape[1]), rounding_mode="floor").clamp_(0, bins - 1)
    counts = torch.bincount(idx, minlength=bins).tolist()
    edges = [i / bins for i in range(bins + 1)]
    return counts, edges
