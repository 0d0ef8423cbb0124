"""The DuoGPT / SparseGPT layer solve: ALGORITHM.md §9 T1–T3 and numerical health."""

from __future__ import annotations

from typing import TypedDict

import pytest
import torch

from solver.errors import RunError
from solver.math.activations import topk_sparsify
from solver.math.masks import magnitude_mask, prune_count
from solver.math.obc import (
    column_losses,
    column_update,
    damp,
    inverse_cholesky_upper,
    layer_objective,
    prune_obc,
    residual_terms,
)
from solver.math.stats import LayerStats

F64 = torch.float64


class _Solve(TypedDict, total=False):
    """Keyword options of :func:`prune_obc` shared by a test's calls, besides the residual."""

    sparsity: float
    nm: tuple[int, int] | None
    damping: float
    block_size: int
    act_order: bool


class _Residual(TypedDict):
    """The residual statistics and scale of :func:`prune_obc`, with the target sparsity."""

    G: torch.Tensor
    g: torch.Tensor
    alpha: float
    sparsity: float


class _ResidualBlocks(_Residual):
    """:class:`_Residual` with a block size."""

    block_size: int


def _stats(x_sparse: torch.Tensor, x_dense: torch.Tensor | None = None) -> LayerStats:
    """Statistics from (k, m) matrices in the paper's column convention."""
    k = x_sparse.shape[0]
    stats = LayerStats.empty(k, dtype=x_sparse.dtype)
    stats.add(x_sparse.T, None if x_dense is None else x_dense.T)
    return stats


def _problem(
    seed: int, n: int = 16, k: int = 32, m: int = 512, act: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random layer whose compressed input is the dense input with top-k activation sparsity."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(k, 1, generator=gen, dtype=F64) * 2 + 0.2  # uneven channel energies
    mix = torch.randn(k, k, generator=gen, dtype=F64) / k**0.5
    x_dense = (torch.eye(k, dtype=F64) + mix) @ (
        torch.randn(k, m, generator=gen, dtype=F64) * scale
    )
    x_sparse = topk_sparsify(x_dense.T, act).T
    weight = torch.randn(n, k, generator=gen, dtype=F64)
    return weight, x_sparse, x_dense


# -- T1: the closed form against brute-force least squares --------------------------------------


def _brute_force(
    x_hat: torch.Tensor, dx: torch.Tensor, w: torch.Tensor, p: int, q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """min over dw_{>p} ||(q - w_p) x_p + sum_{j>p} dw_j x_j - w_p d_p||^2 / m, per row."""
    m = x_hat.shape[1]
    A = x_hat[p + 1 :].T  # (m, r)
    target = -((q - w)[:, None] * x_hat[p] - w[:, None] * dx[p])  # (n, m)
    sol = torch.linalg.lstsq(A, target.T).solution  # (r, n)
    resid = A @ sol - target.T
    return (resid**2).sum(dim=0) / m, sol.T  # loss (n,), argmin (n, r)


@pytest.mark.parametrize("p", [0, 3])
def test_t1_closed_form_matches_brute_force(p: int) -> None:
    gen = torch.Generator().manual_seed(1)
    k, m = 7, 60
    x_hat = torch.randn(k, m, generator=gen, dtype=F64)
    dx = torch.randn(k, m, generator=gen, dtype=F64) * 0.7
    w = torch.randn(5, generator=gen, dtype=F64)  # five rows' values at column p
    # Columns < p are held fixed: only the trailing block x_{>=p} takes part.
    H = x_hat @ x_hat.T / m
    G = dx @ x_hat.T / m
    g = (dx * dx).sum(dim=1) / m
    U = inverse_cholesky_upper(H)
    assert U is not None
    assert torch.allclose(U.T @ U, torch.linalg.inv(H), atol=1e-10)
    terms = residual_terms(G, g, U)
    assert torch.all(torch.diagonal(terms.D) == 0)

    prune_loss, keep_loss = column_losses(w, p, U, terms, alpha=1.0)
    bf_prune, bf_prune_dw = _brute_force(x_hat, dx, w, p, torch.zeros_like(w))
    bf_keep, bf_keep_dw = _brute_force(x_hat, dx, w, p, w)
    torch.testing.assert_close(prune_loss, bf_prune, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(keep_loss, bf_keep, rtol=1e-9, atol=1e-12)
    upd_prune = column_update(w, p, U, terms, alpha=1.0, prune=True)
    upd_keep = column_update(w, p, U, terms, alpha=1.0, prune=False)
    torch.testing.assert_close(upd_prune, bf_prune_dw, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(upd_keep, bf_keep_dw, rtol=1e-9, atol=1e-10)

    # Without a mismatch (alpha 0) the table is SparseGPT's: w^2 / U_pp^2 and -(w/U_pp) U[p, j].
    sg_prune, sg_keep = column_losses(w, p, U)
    bf_sg, bf_sg_dw = _brute_force(x_hat, torch.zeros_like(dx), w, p, torch.zeros_like(w))
    torch.testing.assert_close(sg_prune, bf_sg, rtol=1e-9, atol=1e-12)
    assert torch.all(sg_keep == 0)
    torch.testing.assert_close(column_update(w, p, U, prune=True), bf_sg_dw, rtol=1e-9, atol=1e-10)


def test_t1_pieces_match_their_definitions() -> None:
    """a, b, c are the energies named in ALGORITHM.md §4 (derivation of T1)."""
    gen = torch.Generator().manual_seed(2)
    k, m, p = 6, 50, 1
    x_hat = torch.randn(k, m, generator=gen, dtype=F64)
    dx = torch.randn(k, m, generator=gen, dtype=F64)
    H, G, g = x_hat @ x_hat.T / m, dx @ x_hat.T / m, (dx * dx).sum(dim=1) / m
    U = inverse_cholesky_upper(H)
    assert U is not None
    terms = residual_terms(G, g, U)
    later = x_hat[p + 1 :].T  # (m, r)
    proj = later @ torch.linalg.lstsq(later, x_hat[p]).solution
    e_p = x_hat[p] - proj  # residual of x_p after projecting on span(x_{>p})
    proj_d = later @ torch.linalg.lstsq(later, dx[p]).solution
    torch.testing.assert_close((e_p @ e_p) / m, 1 / U[p, p] ** 2)
    torch.testing.assert_close((e_p @ dx[p]) / m, terms.c[p])
    torch.testing.assert_close((proj_d @ proj_d) / m, terms.b[p])
    torch.testing.assert_close(terms.a[p], (dx[p] @ dx[p]) / m)


# -- T2 / T3: reductions ---------------------------------------------------------------------


@pytest.mark.parametrize("nm", [None, (2, 4)])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 0.125])
def test_t2_no_mismatch_is_sparsegpt(
    nm: tuple[int, int] | None, act_order: bool, alpha: float
) -> None:
    weight, x_sparse, _ = _problem(3, n=12, k=32, m=200)
    stats = _stats(x_sparse, x_sparse)  # X~ = X^: dX = 0
    assert stats.has_dense
    opts = _Solve(sparsity=0.5, nm=nm, damping=0.01, block_size=8, act_order=act_order)
    duo = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=alpha, **opts)
    sparsegpt = prune_obc(weight, stats.H, **opts)
    assert torch.equal(duo.mask, sparsegpt.mask)
    torch.testing.assert_close(duo.weight, sparsegpt.weight, rtol=1e-12, atol=1e-12)
    assert not torch.equal(sparsegpt.weight, weight.masked_fill(sparsegpt.mask, 0))  # updates


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_t3_alpha_zero_is_sparsegpt_on_sparse_statistics(nm: tuple[int, int] | None) -> None:
    weight, x_sparse, x_dense = _problem(4, n=12, k=32, m=200)
    stats = _stats(x_sparse, x_dense)
    assert stats.G.abs().max() > 0.01
    opts = _Solve(sparsity=0.5, nm=nm, block_size=8)
    sparsegpt = prune_obc(weight, stats.H, **opts)
    zero = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=0.0, **opts)
    assert torch.equal(zero.weight, sparsegpt.weight)
    # The residual code path itself tends to SparseGPT as alpha -> 0.
    tiny = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=1e-12, **opts)
    assert torch.equal(tiny.mask, sparsegpt.mask)
    torch.testing.assert_close(tiny.weight, sparsegpt.weight, rtol=1e-9, atol=1e-9)
    full = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=1.0, **opts)
    assert not torch.allclose(full.weight, sparsegpt.weight)


# -- against independent, unblocked reference implementations ----------------------------------


def _reference(
    weight: torch.Tensor,
    H: torch.Tensor,
    G: torch.Tensor | None,
    g: torch.Tensor | None,
    alpha: float,
    sparsity: float,
    block_size: int,
    damping: float = 0.01,
    per_row: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 without the lazy update: every column updates all later columns at once.

    Dead input channels (``H_jj = 0``) are pruned first, inside the target count.
    """
    W = weight.clone()
    k = W.shape[1]
    H = H.clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1
    H = H + damping * torch.diagonal(H).mean() * torch.eye(k, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    if G is None:
        D = torch.zeros_like(H)
        extra = torch.zeros(k, dtype=H.dtype)
    else:
        assert g is not None, "g comes with G"
        Q = G @ U.T
        Qs = torch.triu(Q, 1)
        D = alpha * Qs @ U
        extra = alpha * (g - (Qs**2).sum(1) + 2 * torch.diagonal(Q) / torch.diagonal(U))
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        S = W[:, i1:i2] ** 2 / torch.diagonal(U)[i1:i2] ** 2 + W[:, i1:i2] ** 2 * extra[i1:i2]
        S[:, dead[i1:i2]] = -torch.inf
        if per_row:
            c = prune_count(i2 - i1, sparsity)
            for row in range(S.shape[0]):
                mask[row, i1 + torch.argsort(S[row])[:c]] = True
        else:
            c = prune_count(S.numel(), sparsity)
            flat = torch.zeros(S.numel(), dtype=torch.bool)
            flat[torch.argsort(S.flatten())[:c]] = True
            mask[:, i1:i2] = flat.view(S.shape)
        for p in range(i1, i2):
            w = W[:, p].clone()
            q = torch.where(mask[:, p], torch.zeros_like(w), w)
            W[:, p:] += -torch.outer((w - q) / U[p, p], U[p, p:]) + torch.outer(w, D[p, p:])
            W[:, p] = q
    return W, mask


@pytest.mark.parametrize("alpha", [0.0, 0.25])
@pytest.mark.parametrize("block_size", [5, 8, 64])
def test_blocked_solve_matches_unblocked_reference(alpha: float, block_size: int) -> None:
    weight, x_sparse, x_dense = _problem(5, n=10, k=24, m=150)
    stats = _stats(x_sparse, x_dense)
    G, g = (stats.G, stats.g) if alpha else (None, None)
    ref_w, ref_mask = _reference(weight, stats.H, G, g, alpha, 0.5, block_size)
    got = prune_obc(weight, stats.H, G=G, g=g, alpha=alpha, sparsity=0.5, block_size=block_size)
    assert torch.equal(got.mask, ref_mask)
    torch.testing.assert_close(got.weight, ref_w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("per_row", [False, True])
def test_blocked_solve_matches_reference_with_dead_channels(per_row: bool) -> None:
    weight, x_sparse, x_dense = _problem(15, n=10, k=24, m=150)
    x_sparse = x_sparse.clone()
    x_sparse[[2, 9, 17]] = 0  # three inputs never active
    stats = _stats(x_sparse, x_dense)
    ref_w, ref_mask = _reference(weight, stats.H, stats.G, stats.g, 0.25, 0.5, 8, per_row=per_row)
    got = prune_obc(
        weight,
        stats.H,
        G=stats.G,
        g=stats.g,
        alpha=0.25,
        sparsity=0.5,
        block_size=8,
        mask_scope="row" if per_row else "block",
    )
    assert torch.equal(got.mask, ref_mask)
    torch.testing.assert_close(got.weight, ref_w, rtol=1e-9, atol=1e-9)
    if per_row:
        assert torch.all(got.mask.sum(dim=1) == 12)  # every row loses the same count


def test_residual_variants_differ_only_across_blocks() -> None:
    weight, x_sparse, x_dense = _problem(6, n=10, k=24, m=150)
    stats = _stats(x_sparse, x_dense)
    common = _Residual(G=stats.G, g=stats.g, alpha=0.5, sparsity=0.5)
    one_block = [
        prune_obc(weight, stats.H, block_size=64, residual_variant=v, **common).weight
        for v in ("original", "pruned")
    ]
    torch.testing.assert_close(one_block[0], one_block[1], rtol=0, atol=0)
    blocked = [
        prune_obc(weight, stats.H, block_size=6, residual_variant=v, **common).weight
        for v in ("original", "pruned")
    ]
    assert not torch.allclose(blocked[0], blocked[1])
    with pytest.raises(ValueError):
        prune_obc(weight, stats.H, residual_variant="nope")


def test_mask_uses_the_duogpt_score() -> None:
    """One block: the pruned weights are those with the smallest §4 prune loss at the start."""
    weight, x_sparse, x_dense = _problem(16, n=8, k=12, m=150, act=0.6)
    stats = _stats(x_sparse, x_dense)
    result = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=1.0, block_size=12)
    U = inverse_cholesky_upper(damp(stats.H, 0.01))
    assert U is not None
    terms = residual_terms(stats.G, stats.g, U)
    duo_score = torch.stack(
        [column_losses(weight[:, p], p, U, terms, 1.0)[0] for p in range(12)], 1
    )
    sparsegpt_score = torch.stack([column_losses(weight[:, p], p, U)[0] for p in range(12)], 1)
    count = prune_count(weight.numel(), 0.5)

    def smallest(score: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(score.numel(), dtype=torch.bool)
        mask[torch.argsort(score.flatten())[:count]] = True
        return mask.view(score.shape)

    assert torch.equal(result.mask, smallest(duo_score))
    assert not torch.equal(result.mask, smallest(sparsegpt_score))  # the residual term matters


def test_zero_sparsity_keeps_weights_for_sparsegpt() -> None:
    weight, x_sparse, _ = _problem(7, n=8, k=16, m=100)
    stats = _stats(x_sparse)
    result = prune_obc(weight, stats.H, sparsity=0.0, block_size=4)
    assert not result.mask.any()
    assert torch.equal(result.weight, weight)


# -- property: the objective orders the methods ------------------------------------------------


@pytest.mark.parametrize("seed", [10, 11])
def test_duogpt_lowers_the_dual_sparse_objective(seed: int) -> None:
    weight, x_sparse, x_dense = _problem(seed, n=16, k=32, m=600)
    stats = _stats(x_sparse, x_dense)
    opts = _Solve(sparsity=0.5, block_size=16)

    def objective(new_weight: torch.Tensor) -> float:
        return layer_objective(weight, new_weight, stats)

    magnitude = objective(weight.masked_fill(magnitude_mask(weight, 0.5), 0))
    sparsegpt_sparse = objective(prune_obc(weight, stats.H, **opts).weight)
    sparsegpt_dense = objective(prune_obc(weight, stats.H_dense, **opts).weight)
    duo = {
        alpha: objective(
            prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=alpha, **opts).weight
        )
        for alpha in (1.0, 0.25)
    }
    assert sparsegpt_sparse < magnitude
    assert sparsegpt_dense < magnitude
    for value in duo.values():
        assert value < sparsegpt_sparse
        assert value < sparsegpt_dense
    assert duo[1.0] < duo[0.25]  # in-sample, the full residual is best
    # Dense-calibrated weights are also better than magnitude on plain SparseGPT's own objective.
    plain = _stats(x_sparse)
    assert layer_objective(
        weight, prune_obc(weight, plain.H, **opts).weight, plain
    ) < layer_objective(weight, weight.masked_fill(magnitude_mask(weight, 0.5), 0), plain)


# -- structure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("act_order", [False, True])
def test_unstructured_sparsity_is_exact(act_order: bool) -> None:
    weight, x_sparse, x_dense = _problem(8, n=10, k=30, m=120)
    stats = _stats(x_sparse, x_dense)
    for sparsity in (0.3, 0.5, 0.7):
        result = prune_obc(
            weight, stats.H, G=stats.G, g=stats.g, alpha=0.125, sparsity=sparsity,
            block_size=10, act_order=act_order,
        )  # fmt: skip
        assert int(result.mask.sum()) == prune_count(10 * 10, sparsity) * 3
        assert torch.all(result.weight[result.mask] == 0)
        assert int((result.weight == 0).sum()) == int(result.mask.sum())


@pytest.mark.parametrize("nm", [(2, 4), (4, 8)])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("block_size", [6, 16])
def test_nm_pattern_is_exact(nm: tuple[int, int], act_order: bool, block_size: int) -> None:
    weight, x_sparse, x_dense = _problem(9, n=8, k=32, m=120)
    stats = _stats(x_sparse, x_dense)
    result = prune_obc(
        weight, stats.H, G=stats.G, g=stats.g, alpha=0.5, nm=nm,
        block_size=block_size, act_order=act_order,
    )  # fmt: skip
    zeros = (result.weight == 0).reshape(8, -1, nm[1]).sum(dim=2)
    assert torch.all(zeros == nm[0])
    assert torch.equal(result.mask, result.weight == 0)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_nm_with_act_order_matches_eager_reference(alpha: float) -> None:
    """Groups straddle blocks under act-order: decided on up-to-date values of all members."""
    weight, x_sparse, x_dense = _problem(17, n=24, k=16, m=120, act=0.7)
    stats = _stats(x_sparse, x_dense)
    G, g = (stats.G, stats.g) if alpha else (None, None)
    got = prune_obc(weight, stats.H, G=G, g=g, alpha=alpha, nm=(2, 4), act_order=True, block_size=3)

    perm = torch.argsort(torch.diagonal(stats.H), descending=True)
    W = weight[:, perm].clone()
    U = inverse_cholesky_upper(damp(stats.H[perm][:, perm], 0.01))
    assert U is not None
    D = torch.zeros_like(U)
    extra = torch.zeros(16, dtype=F64)
    if alpha:
        terms = residual_terms(stats.G[perm][:, perm], stats.g[perm], U)
        D, extra = alpha * terms.D, terms.extra(alpha)
    group = perm // 4
    mask = torch.zeros_like(W, dtype=torch.bool)
    seen: set[int] = set()
    for p in range(16):
        if int(group[p]) not in seen:
            seen.add(int(group[p]))
            pos = torch.nonzero(group == group[p]).flatten()
            s = W[:, pos] ** 2 / torch.diagonal(U)[pos] ** 2 + W[:, pos] ** 2 * extra[pos]
            chosen = torch.zeros_like(s, dtype=torch.bool)
            mask[:, pos] = chosen.scatter_(1, torch.topk(s, 2, dim=1, largest=False).indices, True)
        w = W[:, p].clone()
        q = torch.where(mask[:, p], torch.zeros_like(w), w)
        W[:, p:] += -torch.outer((w - q) / U[p, p], U[p, p:]) + torch.outer(w, D[p, p:])
        W[:, p] = q
    inv = torch.argsort(perm)
    assert torch.equal(got.mask, mask[:, inv])
    torch.testing.assert_close(got.weight, W[:, inv], rtol=1e-9, atol=1e-9)


def test_nm_needs_a_matching_width() -> None:
    with pytest.raises(RunError, match="multiples of 4"):
        prune_obc(torch.randn(4, 10), torch.eye(10), nm=(2, 4))


def test_nm_groups_are_decided_on_current_values() -> None:
    """Without act-order and with aligned blocks, N:M matches SparseGPT's per-group rule."""
    weight, x_sparse, _ = _problem(12, n=6, k=16, m=100)
    stats = _stats(x_sparse)
    result = prune_obc(weight, stats.H, nm=(2, 4), block_size=8)
    # Redo it eagerly: at every group start, score the group's current columns.
    H = damp(stats.H, 0.01)
    U = inverse_cholesky_upper(H)
    assert U is not None
    W = weight.clone()
    for p in range(16):
        if p % 4 == 0:
            s = W[:, p : p + 4] ** 2 / torch.diagonal(U)[p : p + 4] ** 2
            group_mask = torch.zeros_like(s, dtype=torch.bool)
            group_mask.scatter_(1, torch.topk(s, 2, dim=1, largest=False).indices, True)
        w = W[:, p].clone()
        q = torch.where(group_mask[:, p % 4], torch.zeros_like(w), w)
        W[:, p:] -= torch.outer((w - q) / U[p, p], U[p, p:])
        W[:, p] = q
    torch.testing.assert_close(result.weight, W, rtol=1e-9, atol=1e-9)


# -- numerical health --------------------------------------------------------------------------


def test_dead_channel_gives_no_nan() -> None:
    weight, x_sparse, x_dense = _problem(13, n=8, k=16, m=80)
    x_sparse = x_sparse.clone()
    x_sparse[5] = 0  # never active in the compressed model
    stats = _stats(x_sparse, x_dense)
    for act_order in (False, True):
        result = prune_obc(
            weight, stats.H, G=stats.G, g=stats.g, alpha=1.0, block_size=4, act_order=act_order
        )
        assert torch.isfinite(result.weight).all()
        assert torch.all(result.weight[:, 5] == 0)
        assert torch.all(result.mask[:, 5])
    # At sparsity 0 nothing is pruned: a dead channel's weights are kept (never counted on top
    # of the target), and only the residual compensation moves the other columns.
    kept = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=1.0, sparsity=0.0)
    assert int(kept.mask.sum()) == 0
    assert torch.equal(kept.weight[:, 5], weight[:, 5])


def test_dead_channels_are_pruned_inside_the_target() -> None:
    """Dead inputs are pruned first, and the achieved sparsity is the target (issue 9)."""
    weight, x_sparse, x_dense = _problem(21, n=8, k=32, m=120)
    x_sparse = x_sparse.clone()
    dead = torch.arange(0, 32, 4)  # one dead input in every group of 4
    x_sparse[dead] = 0
    stats = _stats(x_sparse, x_dense)
    for nm in (None, (2, 4)):
        result = prune_obc(
            weight, stats.H, G=stats.G, g=stats.g, alpha=0.5, sparsity=0.5, nm=nm, block_size=8
        )
        assert int(result.mask.sum()) == weight.numel() // 2, nm  # the target, not more
        assert torch.all(result.mask[:, dead]), nm  # the dead ones are always among the pruned
        assert torch.all(result.weight[result.mask] == 0)
        if nm is not None:
            assert torch.all(result.mask.reshape(8, 8, 4).sum(dim=2) == 2)


def test_rank_deficient_hessian_is_handled_by_damping() -> None:
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(16, 6, generator=gen)  # k=16 features, only 6 tokens: rank 6
    stats = _stats(x)
    weight = torch.randn(8, 16, generator=gen)
    result = prune_obc(weight, stats.H, sparsity=0.5, block_size=8)
    assert result.retries == 0
    assert result.damping == 0.01
    assert torch.isfinite(result.weight).all()
    assert result.weight.dtype == torch.float32


def test_indefinite_hessian_raises_damping_then_fails() -> None:
    weight = torch.randn(4, 4, dtype=F64)
    slightly = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.05], dtype=F64))
    result = prune_obc(weight, slightly, block_size=2)
    assert result.retries == 1
    assert result.damping == pytest.approx(0.1)
    with pytest.raises(RunError, match=r"even with damping 100\b.*--damping"):
        prune_obc(weight, -torch.eye(4, dtype=F64), max_retries=4)
    with pytest.raises(RunError, match="NaN or Inf"):
        prune_obc(weight, torch.full((4, 4), float("nan"), dtype=F64))


def test_dtype_and_device_are_preserved() -> None:
    weight = torch.randn(6, 8).to(torch.bfloat16)
    stats = _stats(torch.randn(8, 40))
    result = prune_obc(weight, stats.H, sparsity=0.5, block_size=4)
    assert result.weight.dtype == torch.bfloat16
    assert result.weight.shape == weight.shape
    assert result.mask.dtype == torch.bool


def test_tf32_setting_is_restored() -> None:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        prune_obc(torch.randn(4, 8), torch.eye(8), block_size=4)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


# -- layer_objective ---------------------------------------------------------------------------


def test_layer_objective_matches_explicit_matrices() -> None:
    weight, x_sparse, x_dense = _problem(15, n=6, k=12, m=90)
    stats = _stats(x_sparse, x_dense)
    new = prune_obc(weight, stats.H, G=stats.G, g=stats.g, alpha=0.5, block_size=4).weight
    direct = ((new @ x_sparse - weight @ x_dense) ** 2).sum() / ((weight @ x_dense) ** 2).sum()
    assert layer_objective(weight, new, stats) == pytest.approx(float(direct), rel=1e-10)
    before = ((weight @ (x_sparse - x_dense)) ** 2).sum() / ((weight @ x_dense) ** 2).sum()
    assert layer_objective(weight, weight, stats) == pytest.approx(float(before), rel=1e-10)
    # float32 statistics are promoted to float64 for the traces.
    stats32 = _stats(x_sparse.float(), x_dense.float())
    assert layer_objective(weight.float(), new.float(), stats32) == pytest.approx(
        float(direct), rel=1e-4
    )
    plain = _stats(x_sparse)  # no dense stream: ||(W' - W) X^||^2 / ||W X^||^2
    direct_plain = ((new - weight) @ x_sparse).pow(2).sum() / (weight @ x_sparse).pow(2).sum()
    assert layer_objective(weight, new, plain) == pytest.approx(float(direct_plain), rel=1e-10)
    assert layer_objective(weight, new, LayerStats.empty(12)) == 0.0


def test_residual_damping_is_a_ridge_on_the_residual_update() -> None:
    """A separate, larger damping of the residual terms shrinks the residual's weight update
    (``D``, ``b``, ``c`` vanish; the mismatch energy ``a`` stays in the score): the results
    converge as it grows. At or below the OBS damping it changes nothing."""
    weight, x_sparse, x_dense = _problem(31, n=10, k=24, m=60)
    stats = _stats(x_sparse, x_dense)
    common = _ResidualBlocks(G=stats.G, g=stats.g, alpha=0.5, sparsity=0.5, block_size=8)
    plain = prune_obc(weight, stats.H, **common)
    same = prune_obc(weight, stats.H, residual_damping=0.005, **common)
    torch.testing.assert_close(same.weight, plain.weight, rtol=0, atol=0)
    solved = {r: prune_obc(weight, stats.H, residual_damping=r, **common) for r in (0.1, 1e6, 1e9)}
    assert not torch.allclose(solved[0.1].weight, plain.weight)
    limit = solved[1e9].weight
    assert float((solved[1e6].weight - limit).norm()) < 1e-3 * float((plain.weight - limit).norm())


def test_small_work_runs_on_one_thread_and_restores_the_count() -> None:
    from solver.math.obc import SMALL_COLUMN_WORK, fewer_threads

    cpu = torch.device("cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with fewer_threads(SMALL_COLUMN_WORK - 1, SMALL_COLUMN_WORK, cpu):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with fewer_threads(SMALL_COLUMN_WORK, SMALL_COLUMN_WORK, cpu):  # large: every thread
            assert torch.get_num_threads() == 2
        with fewer_threads(1, SMALL_COLUMN_WORK, torch.device("meta")):  # not the CPU
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), fewer_threads(1, SMALL_COLUMN_WORK, cpu):
            raise RuntimeError("a failed solve")
        assert torch.get_num_threads() == 2  # restored on the way out of an error too
    finally:
        torch.set_num_threads(before)


def test_a_small_layer_is_solved_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from solver.math import obc

    seen: list[int] = []
    original = obc._sweep

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(obc, "_sweep", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(256, 32, dtype=torch.float64)
        w = torch.randn(16, 32, dtype=torch.float64)
        prune_obc(w, x.T @ x / 256)
        monkeypatch.setattr(obc, "SMALL_SOLVE", 0)  # the old behaviour: every thread
        prune_obc(w, x.T @ x / 256)
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
