"""Choosing DuoGPT's residual scale ``alpha`` per layer on held-out calibration data.

ALGORITHM.md §4: a fixed ``(alpha, damping)`` pair that suits one model can wreck another, so
``alpha`` can be chosen per layer from data held out of the fit, with ``alpha = 0`` always among
the candidates. With ``alpha_select = "heldout"`` every :data:`HOLDOUT_EVERY`-th calibration
sequence is kept out of the candidate solves and scores them by the layer objective; the final
solve uses every sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from solver.config import RunConfig
from solver.math.obc import layer_errors
from solver.math.stats import LayerStats

HOLDOUT_EVERY = 4
"""With held-out alpha selection, every 4th calibration sequence (indices 3, 7, 11...) is held
out of the candidate solves to score them."""


def selects_alpha(config: RunConfig) -> bool:
    """True when the run asks for held-out selection and has enough sequences to hold some out.

    The caller also checks that its method has a residual (only DuoGPT's has an alpha).
    """
    return (
        config.alpha_select == "heldout" and config.alpha > 0 and config.nsamples >= HOLDOUT_EVERY
    )


def alpha_candidates(alpha: float) -> tuple[float, ...]:
    """The alphas tried per layer by held-out selection: 0, half the configured one, and it."""
    return (0.0, alpha / 2, alpha)


Selection = tuple[LayerStats, LayerStats]
"""The fit and the held-out statistics of one group of layers."""


class SplitStats:
    """A group's calibration statistics, with every :data:`HOLDOUT_EVERY`-th sequence also kept
    apart when alpha is selected on held-out data.

    Batches come in run order (sequences numbered from 0), each as the sparse (``X^``), dense
    (``X~``) and, optionally, active-channel inputs that :meth:`LayerStats.add` takes.
    """

    def __init__(
        self, k: int, device: torch.device, *, split: bool, token_clip: float = 0.0
    ) -> None:
        """Start empty for a layer with ``k`` inputs; ``split`` holds sequences out."""
        self.fit = LayerStats.empty(k, device=device)
        self.held = LayerStats.empty(k, device=device) if split else None
        self.token_clip = token_clip
        self.first_row = 0

    def add(self, x_sparse: Tensor, x_dense: Tensor, x_active: Tensor | None = None) -> None:
        """Add one batch of ``[sequences, tokens, k]`` inputs."""
        rows = torch.arange(self.first_row, self.first_row + x_sparse.shape[0])
        self.first_row += x_sparse.shape[0]
        out = rows % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 if self.held is not None else None
        if out is None or not bool(out.any()):
            self.fit.add(x_sparse, x_dense, x_active=x_active, token_clip=self.token_clip)
            return
        for target, rows_in in ((self.fit, ~out), (self.held, out)):
            if target is not None and bool(rows_in.any()):
                target.add(
                    _rows(x_sparse, rows_in),
                    _rows(x_dense, rows_in),
                    x_active=None if x_active is None else _rows(x_active, rows_in),
                    token_clip=self.token_clip,
                )

    def result(self) -> tuple[LayerStats, Selection | None]:
        """The statistics of every sequence, and the fit/held-out pair when both saw some."""
        fit, held = self.fit, self.held
        stats = fit if held is None or not held.count else fit.merged(held)
        selection = (fit, held) if held is not None and held.count and fit.count else None
        return stats, selection


def _rows(x: Tensor, chosen: Tensor) -> Tensor:
    """The sequences (first dimension) of a batch that ``chosen`` marks."""
    return x[chosen.to(x.device)]


def choose_alpha(
    weight: Tensor,
    fit: LayerStats,
    held: LayerStats,
    alpha: float,
    solve: Callable[[float, LayerStats], Tensor],
) -> tuple[float, dict[float, float]]:
    """The best of :func:`alpha_candidates` for one layer.

    Each candidate is solved on the fit statistics (``solve(candidate, fit)`` returns the
    pruned weight) and scored by the layer objective on the held-out ones; the lowest wins, a tie
    keeping the smaller alpha.

    Returns:
        The chosen alpha and every candidate's held-out score.
    """
    scores: dict[float, float] = {}
    for candidate in alpha_candidates(alpha):
        trial = solve(candidate, fit)
        scores[candidate] = layer_errors(weight, trial, held)[1]
    best = min(scores, key=lambda a: (scores[a], a))
    return best, scores
