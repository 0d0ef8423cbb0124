"""The pruning methods, by name: what each reads from calibration and how it solves a layer.

ARCHITECTURE.md, "The solver side": methods are a registry; each declares the statistics it needs
and its solve, and the driver never branches on a method's name. Adding a method is one
:class:`Method` in :data:`REGISTRY` below: the run configuration's choices
(:data:`solver.config.METHODS`), the CLI's help and the setup screen's picker follow from it.

The baselines of ALGORITHM.md §6 and DuoGPT itself (§4-5):

* ``duogpt`` — the OBS solve on activation-sparse inputs ``X^`` with the residual of the dense
  model's inputs ``X~`` (``H``, ``G``, ``g``), scaled by ``alpha`` (fixed or chosen per layer on
  held-out data, :mod:`solver.run.alpha`).
* ``sparsegpt`` — the OBS solve on dense-input statistics ``H`` (no residual).
* ``wanda`` — ``|W| * ||X_j||``, compared within each output row (``diag(H)`` only).
* ``magnitude`` — ``|W|``; reads no calibration statistics.
* ``dense`` — prunes nothing (the reference; activation sparsity may still apply).

This module imports no torch at import time (the solves import their math when called), so that
:mod:`solver.config` and the CLI's ``--help`` can take the names from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from solver.errors import InputError

if TYPE_CHECKING:
    from torch import Tensor

    from solver.config import RunConfig
    from solver.math.obc import SolveResult
    from solver.math.stats import LayerStats
    from solver.run.alpha import Selection

__all__ = ["NAMES", "REGISTRY", "Method", "Solution", "Statistics", "get"]


@dataclass(frozen=True)
class Statistics:
    """The calibration statistics a method reads (ALGORITHM.md §2).

    Attributes:
        hessian: the full Gram matrix ``H`` of its inputs: a second-order (OBS) solve. Its
            ``k x k`` estimate needs many tokens per input (the thin-calibration warning) and
            is protected from outlier tokens by ``token_clip``.
        norms: only ``diag(H)``, the inputs' energy per channel.
        mismatch: ``G`` and ``g`` of ``dX = X~ - X^``: the method calibrates on the
            activation-sparse inputs ``X^`` against the dense model's ``X~``, with a residual
            scale ``alpha``.
    """

    hessian: bool = False
    norms: bool = False
    mismatch: bool = False


@dataclass(frozen=True)
class Solution:
    """One layer's pruned weight and how it was found.

    Attributes:
        weight: the pruned ``(n, k)`` float32 weight.
        damping: the relative damping used (raised on a Cholesky failure).
        retries: how many times the damping was raised.
        alpha: the residual scale used (0 without a residual).
        heldout: each candidate alpha's held-out score, when alpha was chosen per layer.
    """

    weight: Tensor
    damping: float
    retries: int = 0
    alpha: float = 0.0
    heldout: dict[float, float] = field(default_factory=dict)


Solve = Callable[["Tensor", "LayerStats", "RunConfig", "Selection | None"], Solution]
"""``solve(weight, stats, config, selection)``: prune a float32 copy of one layer's weight.

``stats`` are the group's calibration statistics over every sequence; ``selection`` the fit and
held-out ones when the run selects alpha on held-out data (else None)."""


@dataclass(frozen=True)
class Method:
    """A pruning method.

    Attributes:
        name: what ``--method`` and the run configuration call it.
        summary: one line for help texts.
        reads: the calibration statistics its solve reads.
        solve: prunes one layer (see :data:`Solve`).
        prunes: False for a method that leaves the weights as they are (``dense``).
    """

    name: str
    summary: str
    reads: Statistics
    solve: Solve
    prunes: bool = True


def _obs(weight: Tensor, stats: LayerStats, config: RunConfig, alpha: float | None) -> SolveResult:
    """The OBS solve with the run's options; ``alpha`` None is SparseGPT (no residual)."""
    from solver.math.obc import prune_obc

    return prune_obc(
        weight,
        stats.H,
        G=None if alpha is None else stats.G,
        g=None if alpha is None else stats.g,
        sparsity=config.weight_sparsity,
        nm=config.nm,
        alpha=alpha or 0.0,
        damping=config.damping,
        block_size=config.block_size,
        act_order=config.act_order,
        residual_variant=config.residual_variant,
        damping_rule=config.damping_rule,
        mask_scope=config.mask_scope,
        residual_damping=config.residual_damping,
        channel_alpha=config.channel_alpha,
    )


def _duogpt(
    weight: Tensor, stats: LayerStats, config: RunConfig, selection: Selection | None
) -> Solution:
    """DuoGPT (ALGORITHM.md §5): OBS with the residual; alpha chosen per layer if asked."""
    from solver.run.alpha import choose_alpha

    alpha, heldout = config.alpha, dict[float, float]()
    if selection is not None and alpha > 0:
        alpha, heldout = choose_alpha(
            weight, *selection, alpha, lambda a, fit: _obs(weight, fit, config, a).weight
        )
    result = _obs(weight, stats, config, alpha)
    return Solution(result.weight, result.damping, result.retries, alpha, heldout)


def _sparsegpt(
    weight: Tensor, stats: LayerStats, config: RunConfig, selection: Selection | None
) -> Solution:
    """SparseGPT: OBS on the input Gram matrix, no residual."""
    result = _obs(weight, stats, config, None)
    return Solution(result.weight, result.damping, result.retries)


def _wanda(
    weight: Tensor, stats: LayerStats, config: RunConfig, selection: Selection | None
) -> Solution:
    """Wanda: the smallest ``|W| * ||X_j||`` of each row."""
    import torch

    from solver.math.masks import apply_mask, wanda_mask

    mask = wanda_mask(weight, torch.diagonal(stats.H), config.weight_sparsity, config.nm)
    return Solution(apply_mask(weight, mask), config.damping)


def _magnitude(
    weight: Tensor, stats: LayerStats, config: RunConfig, selection: Selection | None
) -> Solution:
    """Magnitude: the smallest ``|W|`` of the layer."""
    from solver.math.masks import apply_mask, magnitude_mask

    mask = magnitude_mask(weight, config.weight_sparsity, config.nm)
    return Solution(apply_mask(weight, mask), config.damping)


def _dense(
    weight: Tensor, stats: LayerStats, config: RunConfig, selection: Selection | None
) -> Solution:
    """Dense: the weight as it is."""
    return Solution(weight, config.damping)


REGISTRY: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "duogpt",
            "dual-sparse OBS: calibrated under activation sparsity, with the dense residual",
            Statistics(hessian=True, mismatch=True),
            _duogpt,
        ),
        Method("sparsegpt", "OBS on the dense inputs", Statistics(hessian=True), _sparsegpt),
        Method("wanda", "|weight| x input norm, per output row", Statistics(norms=True), _wanda),
        Method("magnitude", "|weight|", Statistics(), _magnitude),
        Method("dense", "no weight pruning", Statistics(), _dense, prunes=False),
    )
}
"""Every method, by name, in the order help texts list them."""

NAMES: tuple[str, ...] = tuple(REGISTRY)
"""The methods' names (the run configuration's choices)."""


def get(name: str) -> Method:
    """The method called ``name``.

    Raises:
        InputError: no such method.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}: choose one of {', '.join(NAMES)}") from None
