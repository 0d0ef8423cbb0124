"""``--channel-alpha``: the per-channel part of DuoGPT's residual.

The full fit (ALGORITHM.md §4, ``--alpha``) maps every input of ``X^`` onto the residual target
``W dX`` (``k^2`` numbers per layer, from the calibration tokens). The channel part keeps only
each input's own least-squares gain ``G_jj / H_jj``, folded into ``W`` before the solve; the
full fit, when on, then corrects the mismatch that is left.
"""

from __future__ import annotations

import pytest
import torch

from solver.math.activations import topk_sparsify
from solver.math.obc import after_fold, channel_gains, prune_obc
from tests.solver.test_obc import _problem, _Solve, _stats
from tests.solver.test_residual_source import TINY, pruned_ppl

F64 = torch.float64


def _upstream_problem(
    seed: int, n: int = 16, k: int = 32, m: int = 512
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_problem` with an upstream error: the compressed stream's input is the dense
    input with a per-channel gain and noise, then top-k. (Top-k alone leaves ``G_jj = 0``: a
    kept entry equals the dense one and a dropped one is zero in ``X^``.)"""
    weight, _, x_dense = _problem(seed, n, k, m)
    gen = torch.Generator().manual_seed(seed + 100)
    gain = 0.6 + 0.6 * torch.rand(k, 1, generator=gen, dtype=F64)
    noise = 0.1 * torch.randn(k, m, generator=gen, dtype=F64)
    x_sparse = topk_sparsify((x_dense * gain + noise).T, 0.5).T
    return weight, x_sparse, x_dense


def test_gains_are_each_channels_least_squares_fit() -> None:
    """Without a ridge, gain_j minimises ``||d_j - gain * x^_j||^2`` over the tokens; a
    channel that the compressed stream shrinks gets a positive gain."""
    _, x_sparse, x_dense = _upstream_problem(3, k=12, m=300)
    stats = _stats(x_sparse, x_dense)
    gains = channel_gains(torch.diagonal(stats.G), stats.H, 0.0, "channel")
    dx = x_dense - x_sparse
    for j in range(12):
        fit = torch.linalg.lstsq(x_sparse[j : j + 1].T, dx[j : j + 1].T).solution
        assert float(gains[j]) == pytest.approx(float(fit), rel=1e-5)  # 1e-6 of the mean H_jj
    assert bool((gains.abs() > 1e-3).all())
    _, topk_only, dense = _problem(3, k=12, m=300)  # no upstream error: nothing to rescale
    pure = _stats(topk_only, dense)
    assert float(channel_gains(torch.diagonal(pure.G), pure.H, 0.0).abs().max()) < 1e-12


@pytest.mark.parametrize("rule", ["channel", "mean"])
def test_the_ridge_shrinks_every_gain_towards_zero(rule: str) -> None:
    _, x_sparse, x_dense = _upstream_problem(4, k=12, m=300)
    stats = _stats(x_sparse, x_dense)
    G_diag = torch.diagonal(stats.G)
    plain, ridged = (channel_gains(G_diag, stats.H, r, rule) for r in (0.0, 1.0))
    assert bool((plain.abs() > 0).all())
    assert bool((ridged.abs() < plain.abs()).all())
    assert torch.equal(torch.sign(ridged), torch.sign(plain))
    if rule == "channel":  # H_jj (1 + 1): half, but for the 1e-6 of the mean H_jj
        torch.testing.assert_close(ridged, plain / 2, rtol=1e-5, atol=0)


def test_without_pruning_the_weight_is_only_rescaled() -> None:
    weight, x_sparse, x_dense = _upstream_problem(5, n=8, k=16, m=200)
    stats = _stats(x_sparse, x_dense)
    out = prune_obc(
        weight, stats.H, G=stats.G, g=stats.g, alpha=0.0, channel_alpha=0.5, sparsity=0.0,
        residual_damping=1.0, damping_rule="channel", damping=0.3,
    )  # fmt: skip
    gains = channel_gains(torch.diagonal(stats.G), stats.H, 1.0, "channel")
    torch.testing.assert_close(out.weight, weight * (1 + 0.5 * gains), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act_order", [False, True])
def test_the_channel_fold_alone_is_sparsegpt_on_the_rescaled_weight(act_order: bool) -> None:
    weight, x_sparse, x_dense = _upstream_problem(6, n=10, k=24, m=200)
    stats = _stats(x_sparse, x_dense)
    common = _Solve(sparsity=0.5, block_size=8, act_order=act_order, damping=0.3)
    duo = prune_obc(
        weight, stats.H, G=stats.G, g=stats.g, alpha=0.0, channel_alpha=0.25,
        residual_damping=0.0, damping_rule="channel", **common,
    )  # fmt: skip
    gains = channel_gains(torch.diagonal(stats.G), stats.H, 0.3, "channel")
    sparsegpt = prune_obc(weight * (1 + 0.25 * gains), stats.H, damping_rule="channel", **common)
    torch.testing.assert_close(duo.weight, sparsegpt.weight, rtol=0, atol=0)
    assert torch.equal(duo.mask, sparsegpt.mask)
    full = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=0.25, **common)
    assert not torch.allclose(full.weight, duo.weight)


def test_the_channel_fold_lowers_the_dual_sparse_objective() -> None:
    """Against SparseGPT on the sparse statistics (alpha 0), the fitted gains bring ``W' X^``
    closer to the dense model's output ``W X~`` on the calibration tokens."""
    weight, x_sparse, x_dense = _upstream_problem(7, n=16, k=32, m=800)
    stats = _stats(x_sparse, x_dense)
    errors = {}
    for alpha in (0.0, 1.0):
        new = prune_obc(
            weight, stats.H, G=stats.G, g=stats.g, alpha=0.0, channel_alpha=alpha,
            sparsity=0.5, damping=0.01,
        ).weight  # fmt: skip
        errors[alpha] = float((new @ x_sparse - weight @ x_dense).pow(2).sum())
    assert errors[1.0] < errors[0.0]


def test_after_fold_gives_the_statistics_of_the_mismatch_left() -> None:
    """``W X~ - W S X^ = W S dX'`` with ``dX' = S^-1 X~ - X^``: the returned ``G`` and ``g``
    are those of ``dX'``, computed from the tokens."""
    _, x_sparse, x_dense = _upstream_problem(9, k=12, m=300)
    stats = _stats(x_sparse, x_dense)
    scale = 1 + 0.3 * torch.rand(12, generator=torch.Generator().manual_seed(0), dtype=F64)
    G_left, g_left = after_fold(stats.G, stats.g, stats.H, scale)
    left = _stats(x_sparse, x_dense / scale.reshape(-1, 1))  # dX' = S^-1 X~ - X^
    torch.testing.assert_close(G_left, left.G, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_left, left.g, rtol=1e-9, atol=1e-12)


def test_the_full_fit_on_top_of_the_channel_fold_lowers_the_objective_further() -> None:
    """``--channel-alpha`` with ``--alpha``: the full fit corrects what the fold left, so
    ``W' X^`` comes closer to ``W X~`` than with the fold alone or the full fit alone."""
    weight, x_sparse, x_dense = _upstream_problem(10, n=16, k=32, m=800)
    stats = _stats(x_sparse, x_dense)

    def error(alpha: float, channel_alpha: float) -> float:
        new = prune_obc(
            weight, stats.H, G=stats.G, g=stats.g, alpha=alpha, channel_alpha=channel_alpha,
            sparsity=0.5, damping=0.01, block_size=8,
        ).weight  # fmt: skip
        return float((new @ x_sparse - weight @ x_dense).pow(2).sum())

    both = error(0.5, 1.0)
    assert both < error(0.0, 1.0)
    assert both < error(0.5, 0.0)


def test_a_run_with_the_channel_fold_differs() -> None:
    base = TINY.replace(act_sparsity=0.5, method="duogpt", alpha=0.5)
    full, both = (pruned_ppl(base.replace(channel_alpha=c)) for c in (0.0, 0.5))
    channel = pruned_ppl(base.replace(alpha=0.0, channel_alpha=0.5))
    zero = pruned_ppl(base.replace(alpha=0.0))
    assert len({round(p, 6) for p in (full, both, channel, zero)}) == 4
