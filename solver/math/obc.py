"""The DuoGPT / SparseGPT layer solve (ALGORITHM.md §3–5).

One linear layer ``W`` (``n x k``) is pruned column by column, left to right, minimising
``|| W' X^ - W X~ ||^2`` (§3): the OBC / SparseGPT problem on the sparse-input statistics ``H``
plus the residual target ``W dX`` from the dense model, weighted by ``alpha``. With ``alpha = 0``
or ``G = None`` it is SparseGPT on ``H``; with ``dX = 0`` it is SparseGPT (§9 T2, T3).

The pieces of the closed form (§4) are small functions so that they can be checked one by one
against brute-force least squares (§9 T1): :func:`inverse_cholesky_upper` (``U``),
:func:`residual_terms` (``D``, ``a``, ``b``, ``c``), :func:`column_losses` and
:func:`column_update` (one row of the §4 table). :func:`prune_obc` is Algorithm 1 of §5 in its
blocked form, and :func:`layer_objective` measures the normalised objective from the statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from solver.errors import RunError
from solver.math.masks import prune_count, rowwise_smallest_mask, smallest_mask
from solver.math.stats import LayerStats

RESIDUAL_VARIANTS = ("original", "pruned")
MASK_SCOPES = ("block", "row")


@dataclass(frozen=True)
class SolveResult:
    """What :func:`prune_obc` returns.

    Attributes:
        weight: the pruned weight, same shape, dtype and device as the input ``W``.
        mask: bool, ``True`` where a weight was pruned (including dead input channels).
        damping: the relative damping finally used.
        retries: how often the damping had to be raised (x10 each time) for Cholesky.
    """

    weight: Tensor
    mask: Tensor
    damping: float
    retries: int


@dataclass(frozen=True)
class ResidualTerms:
    """The residual quantities of ALGORITHM.md §4, before scaling by ``alpha``.

    With ``Q = G U^T`` and ``Qs = triu(Q, 1)``:

    Attributes:
        D: ``Qs U`` (``k x k``, strictly upper triangular): ``w_p D[p, j]`` moves column ``j > p``
            to absorb the projection of column ``p``'s residual ``w_p d_p`` (times ``alpha``).
        a: ``g``: energy of each input channel's mismatch, ``||d_p||^2 / m``.
        b: ``rowsum(Qs^2)``: the part of that energy later columns can absorb.
        c: ``diag(Q) / diag(U)``: ``<e_p, d_p> / m``, the overlap of the pruning error direction
            ``e_p`` with the mismatch.
    """

    D: Tensor
    a: Tensor
    b: Tensor
    c: Tensor

    def extra(self, alpha: float) -> Tensor:
        """``alpha (a - b + 2c)``: the residual part of the pruning score per column (§5 step 6)."""
        return alpha * (self.a - self.b + 2 * self.c)


# -- the pieces of the closed form (§4) ---------------------------------------------------------


DAMPING_RULES = ("mean", "median", "channel")


def damp(H: Tensor, damping: float, rule: str = "mean") -> Tensor:
    """``H + damping * mean(diag(H)) * I`` as a new tensor (§5 step 3).

    Rules (what ``damping`` is relative to):

    * ``mean``: the mean of ``diag(H)`` (SparseGPT's rule);
    * ``median``: the median of the positive diagonal entries, so that a few massive channels do
      not set the damping of all the others;
    * ``channel``: each channel's own ``H_jj`` (``H + damping * diag(H)``, plus ``1e-6`` of the
      mean for channels that are almost never active). Large values shrink the OBS updates and
      turn the score ``w^2 / [H^-1]_jj`` into Wanda's ``w^2 H_jj``.
    """
    out = H.clone()
    diag = torch.diagonal(H)
    if rule == "channel":
        out.diagonal().add_(damping * diag + 1e-6 * diag.mean())
    else:
        out.diagonal().add_(damping * damping_scale(H, rule))
    return out


def damping_scale(H: Tensor, rule: str = "mean") -> Tensor:
    """The diagonal statistic a uniform relative damping multiplies (``mean`` or ``median``)."""
    diag = torch.diagonal(H)
    if rule == "median":
        live = diag[diag > 0]
        return live.median() if live.numel() else diag.mean()
    if rule != "mean":
        raise ValueError(f"unknown damping rule {rule!r}: use mean or median")
    return diag.mean()


def inverse_cholesky_upper(H: Tensor) -> Tensor | None:
    """``U``, the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``), or None if ``H`` is not PD.

    ``cholesky(H) -> cholesky_inverse -> cholesky(upper=True)`` as in §5 step 4. ``U[p:, p:]`` is
    then the same factor for the trailing block ``H[p:, p:]``, which is what makes the
    column-sequential solve cheap.
    """
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        return None
    U: torch.Tensor
    U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
    if int(info) != 0 or not bool(torch.isfinite(U).all()):
        return None
    return U


def residual_terms(G: Tensor, g: Tensor, U: Tensor) -> ResidualTerms:
    """``D``, ``a``, ``b``, ``c`` of ALGORITHM.md §4 (§5 steps 5–6, without ``alpha``).

    Args:
        G: ``k x k`` cross statistic ``dX X^T / m`` (same scale as the ``H`` behind ``U``).
        g: length ``k``, ``rowsum(dX * dX) / m``.
        U: upper Cholesky factor of ``H^-1`` (:func:`inverse_cholesky_upper`).
    """
    Q = _upper_of_product(G, U)  # upper triangle of G U^T (k, k); the rest is never needed
    diag_q = torch.diagonal(Q).clone()
    Qs = Q.triu_(1)  # strict upper triangle, in place
    return ResidualTerms(
        D=_strict_upper_times_upper(Qs, U),
        a=g.clone(),
        b=(Qs * Qs).sum(dim=1),
        c=diag_q / torch.diagonal(U),
    )


_TRI_BLOCK = 256
"""Block size of the triangular products below (plain GEMMs up to twice this size)."""


def _upper_of_product(G: Tensor, U: Tensor) -> Tensor:
    """The upper triangle (diagonal included) of ``G U^T`` for upper-triangular ``U``.

    ``(G U^T)[p, l] = sum_{i >= l} G[p, i] U[l, i]``, so a block of columns ``l`` needs only
    ``G[:, l0:]`` and, for the upper triangle, only the rows ``p < l1``: about ``k^3 / 3``
    multiply-adds instead of ``k^3``. Entries below the diagonal are left unspecified (zero or
    partial) — callers take ``triu``.
    """
    k = G.shape[0]
    if k <= 2 * _TRI_BLOCK:
        return G @ U.T
    Q = torch.zeros_like(G)
    for l0 in range(0, k, _TRI_BLOCK):
        l1 = min(l0 + _TRI_BLOCK, k)
        Q[:l1, l0:l1] = G[:l1, l0:] @ U[l0:l1, l0:].T
    return Q


def _strict_upper_times_upper(Qs: Tensor, U: Tensor) -> Tensor:
    """``Qs U`` for strictly upper ``Qs`` and upper ``U`` (the product is upper triangular).

    ``(Qs U)[p, j] = sum_{p < l <= j} Qs[p, l] U[l, j]``: the block ``(r, c)`` with ``c >= r``
    needs only ``Qs[r, r0:c1] U[r0:c1, c]``, about ``k^3 / 3`` FLOPs instead of ``2 k^3``.
    """
    k = Qs.shape[0]
    if k <= 2 * _TRI_BLOCK:
        return Qs @ U
    D = torch.zeros_like(Qs)
    for r0 in range(0, k, _TRI_BLOCK):
        r1 = min(r0 + _TRI_BLOCK, k)
        for c0 in range(r0, k, _TRI_BLOCK):
            c1 = min(c0 + _TRI_BLOCK, k)
            D[r0:r1, c0:c1] = Qs[r0:r1, r0:c1] @ U[r0:c1, c0:c1]
    return D


def channel_gains(G_diag: Tensor, H: Tensor, ridge: float, rule: str = "mean") -> Tensor:
    """Per input channel, the least-squares gain of the mismatch on the sparse input.

    ``gain_j = <d_j, x^_j> / (||x^_j||^2 + ridge)``: ``G_jj`` over ``H_jj`` damped by ``ridge``
    under ``rule`` (:func:`damp`). ``W diag(1 + gain)`` is then the best approximation of the
    residual target that scales each input of ``X^`` on its own: ``k`` numbers fitted from the
    calibration tokens, where the full fit (§4) has ``k^2``. Only the upstream error moves a
    gain: the top-k loss alone leaves ``G_jj = 0`` (a kept input equals the dense one, a
    dropped one is zero in ``X^``).

    Args:
        G_diag: length ``k``, ``diag(dX X^T) / m``.
        H: ``k x k``, ``X^ X^T / m`` (undamped; only its diagonal and, for ``mean`` or
            ``median``, its scale are read).
        ridge: relative damping of the denominators.
        rule: what ``ridge`` is relative to (``mean``, ``median`` or ``channel``).
    """
    diag = torch.diagonal(H)
    if rule == "channel":
        den = diag * (1 + ridge) + 1e-6 * diag.mean()
    else:
        den = diag + ridge * damping_scale(H, rule)
    return G_diag / den.clamp_min(torch.finfo(den.dtype).tiny)


def after_fold(G: Tensor, g: Tensor, H: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """``G`` and ``g`` of the mismatch left once ``W`` is scaled to ``W S`` (``S = diag(scale)``).

    ``W X~ - W S X^ = W S dX'`` with ``dX' = S^-1 X~ - X^ = (S^-1 - I) X^ + S^-1 dX``, so
    ``G' = dX' X^T / m = S^-1 (H + G) - H`` and
    ``g'_p = (1/s_p - 1)^2 H_pp + 2 (1/s_p - 1) (1/s_p) G_pp + g_p / s_p^2``.

    Args:
        G: ``k x k``, ``dX X^T / m``; g: its ``rowsum(dX * dX) / m``; H: ``X^ X^T / m``
            (undamped); scale: length ``k``, the column scales of ``W``.
    """
    inv = (1 / scale).reshape(-1, 1)
    G_diag = torch.diagonal(G).clone()
    H_diag = torch.diagonal(H).clone()
    G_left = (H + G) * inv - H
    i1 = inv.reshape(-1)
    g_left = (i1 - 1) ** 2 * H_diag + 2 * (i1 - 1) * i1 * G_diag + i1 * i1 * g
    return G_left, g_left


def column_losses(
    w: Tensor, p: int, U: Tensor, terms: ResidualTerms | None = None, alpha: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The §4 table's losses at column ``p`` for current column values ``w``: (prune, keep).

    prune: ``w^2 (1/U_pp^2 + alpha (a_p - b_p + 2 c_p))``; keep: ``w^2 alpha (a_p - b_p)``.
    """
    w2 = w * w
    prune = w2 / U[p, p] ** 2
    keep = torch.zeros_like(w2)
    if terms is not None and alpha:
        keep = w2 * alpha * (terms.a[p] - terms.b[p])
        prune = prune + keep + w2 * alpha * 2 * terms.c[p]
    return prune, keep


def column_update(
    w: Tensor,
    p: int,
    U: Tensor,
    terms: ResidualTerms | None = None,
    alpha: float = 0.0,
    *,
    prune: bool,
) -> Tensor:
    """The §4 table's update of columns ``j > p`` after deciding column ``p``.

    prune: ``-(w/U_pp) U[p, j] + alpha w D[p, j]``; keep: ``alpha w D[p, j]``.

    Args:
        w: ``(n,)`` current values of column ``p`` (one per row).

    Returns:
        ``(n, k - p - 1)``: what to add to columns ``p+1 ..``.
    """
    upd = torch.zeros(w.shape[0], U.shape[1] - p - 1, dtype=U.dtype, device=U.device)
    if prune:
        upd -= torch.outer(w / U[p, p], U[p, p + 1 :])
    if terms is not None and alpha:
        upd += alpha * torch.outer(w, terms.D[p, p + 1 :])
    return upd


# -- Algorithm 1 (§5) ---------------------------------------------------------------------------


@contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off for matmuls (only matters on CUDA), restored afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _factorise(
    H: Tensor, damping: float, max_retries: int, rule: str = "mean"
) -> tuple[Tensor, float, int]:
    """§5 steps 3–4 with retries: ``(U, damping used, retries)``.

    Raises:
        RunError: still not positive definite after ``max_retries`` tenfold increases.
    """
    rel = damping
    for attempt in range(max_retries + 1):
        U = inverse_cholesky_upper(damp(H, rel, rule))
        if U is not None:
            return U, rel, attempt
        if attempt < max_retries:
            rel *= 10
    raise RunError(
        f"Cholesky factorisation failed for a {H.shape[0]}x{H.shape[0]} Hessian even with "
        f"damping {rel:g}; raise --damping or use more calibration samples"
    )


def prune_obc(
    weight: Tensor,
    H: Tensor,
    *,
    G: Tensor | None = None,
    g: Tensor | None = None,
    sparsity: float = 0.5,
    nm: tuple[int, int] | None = None,
    alpha: float = 0.0,
    damping: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    residual_variant: str = "original",
    max_retries: int = 4,
    damping_rule: str = "mean",
    mask_scope: str = "block",
    residual_damping: float = 0.0,
    channel_alpha: float = 0.0,
) -> SolveResult:
    """Prune one layer with DuoGPT (ALGORITHM.md §5, Algorithm 1); SparseGPT when ``alpha = 0``.

    Args:
        weight: ``(n, k)`` layer weight (any float dtype and device; not modified).
        H: ``k x k``, ``X^ X^T / m``.
        G: ``k x k``, ``dX X^T / m``; ``None`` (or ``alpha = 0``) gives SparseGPT on ``H``.
        g: length ``k``, ``rowsum(dX * dX) / m`` (``LayerStats.g``); required with ``G``.
        sparsity: unstructured target: the fraction pruned in every column block of ``n x B``.
        nm: ``(N, M)``: N zeros in every group of M consecutive input columns of each row
            (overrides ``sparsity``). A group's N weights are chosen when its first column is
            reached, from the up-to-date scores of all its columns (as SparseGPT does).
        alpha: residual scale (§4); 0 = SparseGPT on the sparse-input statistics.
        damping: relative damping ``lambda`` (§5 step 3).
        block_size: columns per lazy-update block ``B``.
        act_order: process columns by descending ``diag(H)`` (§5 step 2).
        residual_variant: ``original``: the lazy update carries the pre-pruning column values
            ``w`` (§5); ``pruned``: it carries the pruned values ``q`` (related code's variant).
        max_retries: tenfold damping increases allowed when Cholesky fails.
        damping_rule: what ``damping`` is relative to (:func:`damp`).
        residual_damping: when larger than ``damping``, the residual terms (``D`` and the
            score's residual part) come from ``H`` damped by this much instead: a ridge on the
            regression of ``W dX`` onto ``X^``, which has more unknowns than tokens when the
            calibration is thin. 0 = the same damping as the OBS part.
        mask_scope: unstructured masks compare scores over the whole ``n x B`` block
            (``block``, SparseGPT) or within each row of it (``row``: every row loses the same
            count, as Wanda compares within each output).
        channel_alpha: the scale of the per-channel part of the residual (0 = none). Before
            the solve, each column ``j`` of ``W`` is scaled by ``1 + channel_alpha * gain_j``,
            ``gain_j = G_jj / H_jj`` ridged like the residual (:func:`channel_gains`); the full
            fit (``alpha``) then corrects the mismatch that is left (:func:`after_fold`). With
            ``alpha = 0`` it is SparseGPT's sweep on the rescaled weight.

    Returns:
        The pruned weight (same shape/dtype/device as ``weight``), the mask, and the damping used.

    Raises:
        RunError: Cholesky failed even with the largest damping, the statistics are not finite,
            the result is not finite, or the N:M pattern does not fit the layer width.
        ValueError: a programming error (shapes, options).
    """
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    k = weight.shape[1]
    if H.shape != (k, k):
        raise ValueError(f"H has shape {tuple(H.shape)}, expected ({k}, {k})")
    if mask_scope not in MASK_SCOPES:
        raise ValueError(f"unknown mask scope {mask_scope!r}: use block or row")
    if residual_variant not in RESIDUAL_VARIANTS:
        raise ValueError(f"unknown residual variant {residual_variant!r}: use original or pruned")
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    use_residual = G is not None and alpha != 0
    fold = G is not None and channel_alpha != 0
    if use_residual or fold:
        assert G is not None
        if G.shape != (k, k):
            raise ValueError(f"G has shape {tuple(G.shape)}, expected ({k}, {k})")
    if use_residual and (g is None or g.shape != (k,)):
        raise ValueError(f"g (length {k}) is required together with G")
    if nm is not None:
        if not 0 < nm[0] < nm[1]:
            raise ValueError(f"N:M needs 0 < N < M, got {nm[0]}:{nm[1]}")
        if k % nm[1]:
            raise RunError(
                f"the {nm[0]}:{nm[1]} pattern needs layer widths that are multiples of "
                f"{nm[1]}, but a layer has {k} inputs; use --pattern unstructured"
            )

    device = weight.device
    dtype = torch.float64 if torch.float64 in (weight.dtype, H.dtype) else torch.float32
    with _exact_float32(), fewer_threads(weight.numel(), SMALL_SOLVE, weight.device):
        W = weight.detach().to(device=device, dtype=dtype, copy=True)
        Hw = H.detach().to(device=device, dtype=dtype, copy=True)
        if not bool(torch.isfinite(Hw).all()):
            raise RunError(
                "the layer's input statistics contain NaN or Inf; check the model's activations "
                "in this dtype or use more calibration samples"
            )
        # 1. dead input channels: never active in X^. Their weights are pruned first, inside the
        #    target (so the achieved sparsity is the target), and their residual is carried.
        dead = torch.diagonal(Hw) == 0
        Hw.diagonal()[dead] = 1
        # 2. optional act-order
        perm = torch.argsort(torch.diagonal(Hw), descending=True) if act_order else None
        if perm is not None:
            W, Hw = W[:, perm], Hw[perm][:, perm]
        # 3.-4. damping + U, with retries
        U, used_damping, retries = _factorise(Hw, damping, max_retries, damping_rule)
        scale = H_fold = None
        if fold:
            # 5'. the per-channel part of the residual, folded into W
            assert G is not None
            Gd = torch.diagonal(G.detach()).to(device=device, dtype=dtype)
            ridge = max(residual_damping, used_damping)
            gains = channel_gains(Gd if perm is None else Gd[perm], Hw, ridge, damping_rule)
            scale = 1 + channel_alpha * gains.masked_fill(dead if perm is None else dead[perm], 0)
            W.mul_(scale)
            if use_residual:
                H_fold = Hw  # not modified below (damp copies), so no clone
        U_res = U  # the residual terms' factor: more damping when residual_damping says so
        if use_residual and residual_damping > used_damping:
            U_res = _factorise(Hw, residual_damping, max_retries, damping_rule)[0]
        del Hw
        # 5.-6. residual terms
        Dm = extra = None
        if use_residual:
            assert G is not None and g is not None
            Gw = G.detach().to(device=device, dtype=dtype)
            gw = g.detach().to(device=device, dtype=dtype)
            if perm is not None:
                Gw, gw = Gw[perm][:, perm], gw[perm]
            if H_fold is not None:
                assert scale is not None
                Gw, gw = after_fold(Gw, gw, H_fold, scale)
                del H_fold
            terms = residual_terms(Gw, gw, U_res)
            del Gw
            Dm, extra = alpha * terms.D, terms.extra(alpha)
        del U_res
        # 7. the sweep
        col_orig = perm if perm is not None else torch.arange(k, device=device)
        forced = dead if perm is None else dead[perm]
        mask = _sweep(
            W,
            U,
            Dm,
            extra,
            col_orig,
            sparsity,
            nm,
            block_size,
            residual_variant == "pruned",
            forced if bool(forced.any()) else None,
            mask_scope == "row",
        )
        # 8. undo the permutation, cast back, check
        if perm is not None:
            inv = torch.argsort(perm)
            W, mask = W[:, inv], mask[:, inv]
        if not bool(torch.isfinite(W).all()):
            raise RunError(
                "the pruned weights contain NaN or Inf; raise --damping or lower --alpha"
            )
    return SolveResult(
        weight=W.to(weight.dtype).reshape(weight.shape),
        mask=mask,
        damping=float(used_damping),
        retries=retries,
    )


def _sweep(
    W: Tensor,
    U: Tensor,
    Dm: Tensor | None,
    extra: Tensor | None,
    col_orig: Tensor,
    sparsity: float,
    nm: tuple[int, int] | None,
    block_size: int,
    lazy_pruned: bool,
    forced: Tensor | None = None,
    per_row: bool = False,
) -> Tensor:
    """§5 step 7 in place on ``W`` (columns in processing order); returns the mask (same order).

    ``Dm`` is ``alpha * D`` and ``extra`` is ``alpha (a - b + 2c)``, or both None (SparseGPT).
    ``col_orig[p]`` is the original column index of processing position ``p`` (for N:M groups).
    ``forced`` (bool, length ``k``, processing order) marks columns whose weights are pruned
    before any other, within the target count (dead input channels).
    """
    n, k = W.shape
    diag_u = torch.diagonal(U)
    mask = torch.zeros(n, k, dtype=torch.bool, device=W.device)

    # N:M: groups are M consecutive *original* columns; a group's N zeros are chosen when its
    # first member in processing order is reached (without act-order: at the group's start).
    n_zero = 0
    group_pos = torch.empty(0, dtype=torch.long)
    decide_at: dict[int, int] = {}  # processing position -> group decided there
    if nm is not None:
        n_zero, m = nm
        group_pos = torch.argsort(col_orig).reshape(-1, m)  # (k/m, m) processing positions
        decide_at = {pos: grp for grp, pos in enumerate(group_pos.min(dim=1).values.tolist())}

    # Per column, the OBS compensation (-e U[p, p:]) and the residual compensation (w D[p, p:])
    # are one rank-C update (C = 1 for SparseGPT, 2 for DuoGPT): lazy[:, j] = (-e, r) against
    # rows (U[p], Dm[p]) stacked in `rows`, so a column costs three small kernels, not nine.
    # After column j, lazy[:, j, 0] = -e and lazy[:, j, 1] = the residual carrier (w, or q for
    # the "pruned" variant); the block's lazy update of later columns is then one GEMM.
    channels = 1 if Dm is None else 2
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        b = i2 - i1
        W1 = W[:, i1:i2].clone()  # (n, B)
        lazy = torch.zeros(n, b, channels, dtype=W.dtype, device=W.device)  # (n, B, C)
        rows = _stacked_rows(U, Dm, i1, i2, i1, i2)  # (B, C, B)
        if nm is None:
            scores = _scores(W1, diag_u[i1:i2], None if extra is None else extra[i1:i2])
            if forced is not None:
                scores.masked_fill_(forced[i1:i2].reshape(1, -1), -math.inf)
            if per_row:
                mask[:, i1:i2] = rowwise_smallest_mask(scores, prune_count(b, sparsity))
            else:
                mask[:, i1:i2] = smallest_mask(scores, prune_count(scores.numel(), sparsity))
        neg_scale = _neg_scale(mask[:, i1:i2], diag_u[i1:i2])  # (n, B): -mask / U_pp

        with fewer_threads(n * b * channels, SMALL_COLUMN_WORK, W.device):
            for j in range(b):
                p = i1 + j
                grp = decide_at.get(p)
                if grp is not None:
                    pos = group_pos[grp]
                    cur = _current_columns(W, W1, lazy, U, Dm, pos, i1, i2, j)  # (n, m)
                    s = _scores(cur, diag_u[pos], None if extra is None else extra[pos])
                    if forced is not None:
                        s.masked_fill_(forced[pos].reshape(1, -1), -math.inf)
                    chosen = torch.zeros_like(s, dtype=torch.bool)
                    chosen.scatter_(1, torch.topk(s, n_zero, dim=1, largest=False).indices, True)
                    mask[:, pos] = chosen
                    neg_scale = _neg_scale(mask[:, i1:i2], diag_u[i1:i2])
                w = W1[:, j]  # (n,) current column (a view)
                torch.mul(w, neg_scale[:, j], out=lazy[:, j, 0])  # -e = -(w - q) / U_pp
                if channels == 2:
                    lazy[:, j, 1].copy_(w)
                # W1[:, j:] += -e (outer) U[p, p:i2] + w (outer) Dm[p, p:i2]  (leaves q in column j)
                W1[:, j:].addmm_(lazy[:, j, :], rows[j, :, j:])
                if channels == 2 and lazy_pruned:
                    lazy[:, j, 1].masked_fill_(mask[:, p], 0)  # the lazy update carries q
        W1.masked_fill_(mask[:, i1:i2], 0)  # exact zeros (the update leaves ~1e-8 there)

        W[:, i1:i2] = W1
        if i2 < k:  # lazy update of the later blocks: one GEMM
            later = _stacked_rows(U, Dm, i1, i2, i2, k).reshape(b * channels, k - i2)
            W[:, i2:].addmm_(lazy.reshape(n, b * channels), later)
    return mask


SMALL_COLUMN_WORK = 1 << 20
"""Below this many elements per column update (``n x B x C``), the column loop of a CPU solve
runs on one thread (:func:`fewer_threads`)."""

SMALL_SOLVE = 1 << 22
"""Below this many weights (``n x k``: every layer of SmolLM2-135M, Qwen2.5-0.5B's attention),
a whole CPU solve runs on one thread: each of its kernels is small."""


@contextmanager
def fewer_threads(elements: int, limit: int, device: torch.device) -> Iterator[None]:
    """One torch thread for work of fewer than ``limit`` elements on the CPU, then the thread
    count back (issue 14, "threads under load").

    A solve is a long sequence of small kernels (three per column on ``n x B`` values, plus the
    small factorisations of small layers). Each takes microseconds, and with several threads
    much of that is spent at OpenMP barriers; when other work keeps the cores busy a barrier
    waits for a whole scheduler slice (a 576x576 solve took 0.4-15 s with 2 threads on a loaded
    2-core machine, 0.05 s with 1). So a small layer's whole solve (:data:`SMALL_SOLVE`) and a
    large layer's column loop (:data:`SMALL_COLUMN_WORK`) run on one thread, while a large
    layer's lazy updates and factorisations, and the statistics, keep every thread.
    """
    before = torch.get_num_threads()
    if device.type != "cpu" or elements >= limit or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _stacked_rows(U: Tensor, Dm: Tensor | None, r1: int, r2: int, c1: int, c2: int) -> Tensor:
    """``(r2 - r1, C, c2 - c1)``: per row p, ``U[p, c1:c2]`` (and ``Dm[p, c1:c2]`` when given)."""
    if Dm is None:
        return U[r1:r2, c1:c2].unsqueeze(1)
    return torch.stack((U[r1:r2, c1:c2], Dm[r1:r2, c1:c2]), dim=1)


def _neg_scale(mask: Tensor, diag_u: Tensor) -> Tensor:
    """``-mask / U_pp`` (``n x B``): times a column's values it gives ``-e = -(w - q) / U_pp``."""
    return mask.to(diag_u.dtype) / (-diag_u).reshape(1, -1)


def _scores(W1: Tensor, diag_u: Tensor, extra: Tensor | None) -> Tensor:
    """Pruning score ``S = W^2 / diag(U)^2 + W^2 * extra`` of some columns (§4, §5 step 7).

    ``diag_u`` and ``extra`` hold the values of the same columns as ``W1`` (``n x c``).
    """
    w2 = W1 * W1
    s = w2 / (diag_u * diag_u).reshape(1, -1)
    if extra is not None:
        s = s + w2 * extra.reshape(1, -1)
    return s


def _current_columns(
    W: Tensor,
    W1: Tensor,
    lazy: Tensor,
    U: Tensor,
    Dm: Tensor | None,
    pos: Tensor,
    i1: int,
    i2: int,
    j: int,
) -> Tensor:
    """Up-to-date values of the columns at processing positions ``pos`` (all ``>= i1 + j``).

    Columns inside the block are current in ``W1``; later ones still miss the lazy update of
    this block's first ``j`` columns (``lazy[:, :j]``, see :func:`_sweep`), applied here on the
    fly.
    """
    n, channels = W1.shape[0], lazy.shape[2]
    cols = []
    for q in pos.tolist():
        if q < i2:
            cols.append(W1[:, q - i1])
        else:
            col = W[:, q].clone()
            if j:
                rows = _stacked_rows(U, Dm, i1, i1 + j, q, q + 1).reshape(j * channels)
                col += lazy[:, :j].reshape(n, j * channels) @ rows
            cols.append(col)
    return torch.stack(cols, dim=1)


def layer_objective(weight: Tensor, new_weight: Tensor, stats: LayerStats) -> float:
    """Normalised reconstruction error ``||W' X^ - W X~||^2 / ||W X~||^2`` from the statistics.

    With ``dW = W' - W`` the numerator is ``||dW X^ - W dX||^2 / m``
    ``= tr(dW H dW^T) - 2 tr(dW G^T W^T) + tr(W D W^T)`` and the denominator
    ``tr(W H_dense W^T)`` (ALGORITHM.md §3). Computed in float64.

    Returns:
        The ratio, or 0.0 when the denominator is 0 (no signal).
    """
    return layer_errors(weight, new_weight, stats, dtype=torch.float64)[1]


def layer_errors(
    weight: Tensor, new_weight: Tensor, stats: LayerStats, *, dtype: torch.dtype = torch.float32
) -> tuple[float, float]:
    """The normalised objective before (``W' = W``) and after pruning, sharing the work.

    Four ``n x k x k`` products in ``dtype`` (float32 by default: the figures are for display
    and comparison; :func:`layer_objective` uses float64 for the exactness tests).

    Returns:
        ``(error_before, error_after)``, each 0.0 when ``||W X~||`` is 0.
    """
    dev = stats.H.device
    W = weight.detach().to(device=dev, dtype=dtype)
    dW = new_weight.detach().to(device=dev, dtype=dtype) - W
    whw = float((W @ stats.H.to(dtype) * W).sum())  # tr(W H W^T)
    num = float((dW @ stats.H.to(dtype) * dW).sum())  # tr(dW H dW^T)
    wgw = wdw = 0.0
    if stats.has_dense:
        WG = W @ stats.G.to(dtype)
        wgw = float((WG * W).sum())  # tr(W G W^T) = tr(W G^T W^T)
        num -= 2 * float((WG * dW).sum())  # tr(dW G^T W^T) = <W G, dW>
        del WG
        wdw = float((W @ stats.D.to(dtype) * W).sum())  # tr(W D W^T)
        num += wdw
    den = whw + 2 * wgw + wdw
    if den <= 0 or not math.isfinite(den):
        return 0.0, 0.0
    return max(wdw, 0.0) / den, max(num, 0.0) / den
