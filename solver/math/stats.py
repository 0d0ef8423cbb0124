"""Streaming statistics of a linear layer's input (ALGORITHM.md §2).

For one ``nn.Linear`` with ``k`` inputs the solver needs, over the ``m`` calibration tokens,

* ``H = X^ X^T / m`` — the Gram ("Hessian") of the compressed-model input ``X^``,
* ``G = dX X^T / m`` — the cross term with the input mismatch ``dX = X~ - X^``,
* ``D = dX dX^T / m`` — the mismatch's own Gram, whose diagonal is ``g`` of §2.

All three are kept as unnormalised sums plus the token count ``m``, and read as means (divided by
the one ``m``, so that they always share one scale: §2, "H, G and g must share the same scale
factor"). Sums merge exactly: the statistics of two shards of the calibration tokens, added, are
those of all of them (up to float summation order), which is what data-parallel calibration over
several processes reduces (:mod:`solver.run.distributed`). Tokens are rows here: a batch is a
``(..., k)`` tensor whose leading dimensions are all tokens, so ``x^T x`` is ``X X^T`` in the
paper's column convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LayerStats:
    """Streaming statistics of one linear layer's input (ALGORITHM.md §2) as sums over tokens.

    Attributes:
        H_sum: ``k x k``, ``X^ X^T`` (the sparse / compressed-stream input); :attr:`H` is its mean.
        G_sum: ``k x k``, ``dX X^T`` with ``dX = X~ - X^`` (``X~`` = the dense model's input).
            Until a dense input is first seen it is a zero tensor that takes no memory.
        D_sum: ``k x k``, ``dX dX^T`` (same remark as ``G_sum``).
        count: tokens ``m`` seen.
        zeros: zero entries seen in ``X^``.
        entries: entries seen in ``X^``.
        channel_nonzeros: per input channel, the tokens whose entry was nonzero (int64, length
            ``k``; empty before the first batch): the activity ``P(x_j != 0)`` that the decode
            cost model (:mod:`solver.math.speedup`) needs. By default counted on ``X^``; see
            :meth:`add`'s ``x_active``.
    """

    H_sum: Tensor
    G_sum: Tensor
    D_sum: Tensor
    count: int = 0
    zeros: int = 0
    entries: int = 0
    channel_nonzeros: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @classmethod
    def empty(
        cls, k: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> LayerStats:
        """Statistics of a layer with ``k`` inputs before any token was seen.

        ``G`` and ``D`` start as stride-0 views of one zero, so a run without a dense stream
        (SparseGPT, Wanda) pays for ``H`` only; :meth:`add` materialises them on the first batch
        with a dense input.
        """
        H = torch.zeros(k, k, device=device, dtype=dtype)
        lazy_zero = torch.zeros((), device=device, dtype=dtype).expand(k, k)
        return cls(H_sum=H, G_sum=lazy_zero, D_sum=lazy_zero)

    @property
    def k(self) -> int:
        """Input features of the layer."""
        return self.H_sum.shape[0]

    def _mean(self, total: Tensor) -> Tensor:
        """``total / m`` (a new tensor; ``total`` itself, all zero, before any token)."""
        if not self.count or total.stride() == (0, 0):
            return total
        return total / self.count

    @property
    def H(self) -> Tensor:
        """``X^ X^T / m`` (a new tensor each time it is read)."""
        return self._mean(self.H_sum)

    @property
    def G(self) -> Tensor:
        """``dX X^T / m`` (a stride-0 zero before any dense input)."""
        return self._mean(self.G_sum)

    @property
    def D(self) -> Tensor:
        """``dX dX^T / m`` (a stride-0 zero before any dense input)."""
        return self._mean(self.D_sum)

    def add(
        self,
        x_sparse: Tensor,
        x_dense: Tensor | None = None,
        *,
        x_active: Tensor | None = None,
        token_clip: float = 0.0,
    ) -> None:
        """Add one batch of inputs to the sums.

        Args:
            x_sparse: ``(..., k)`` input ``X^`` of the layer in the compressed model; all leading
                dimensions are tokens.
            x_dense: ``(..., k)`` input ``X~`` of the same tokens in the dense model, or ``None``
                for ``dX = 0``.
            x_active: ``(..., k)`` the inputs whose nonzeros are counted per channel in
                ``channel_nonzeros`` (default ``x_sparse``). A baseline calibrated on dense inputs
                passes the activation-sparse version here, since that is what it runs on.
            token_clip: ``c > 0`` caps each token's weight in ``H``, ``G`` and ``D``: a token
                whose input norm exceeds ``c`` times the batch's median token norm is scaled
                down to that norm (in ``X^`` and ``X~`` alike, so its residual target keeps its
                direction). A handful of "massive activation" tokens (the first token of each
                window in Qwen2.5) otherwise carry most of a layer's statistics. 0 = off.

        Raises:
            ValueError: the shapes do not match the statistics.
        """
        k = self.k
        if x_sparse.shape[-1] != k:
            raise ValueError(
                f"expected inputs with {k} features, got shape {tuple(x_sparse.shape)}"
            )
        xs = x_sparse.reshape(-1, k).to(device=self.H_sum.device, dtype=self.H_sum.dtype)  # (t, k)
        t = xs.shape[0]
        if t == 0:
            return
        if x_dense is not None and x_dense.shape != x_sparse.shape:
            raise ValueError(
                f"dense input shape {tuple(x_dense.shape)} differs from "
                f"sparse input shape {tuple(x_sparse.shape)}"
            )
        self.entries += xs.numel()
        self.zeros += int(xs.numel() - torch.count_nonzero(xs).item())
        self._count_active(xs if x_active is None else x_active.reshape(-1, k))
        self.count += t

        scale = token_weights(xs, token_clip) if token_clip > 0 else None  # (t, 1) or None
        if scale is not None:
            xs = xs * scale
        self.H_sum.addmm_(xs.T, xs)  # H_sum += X^ X^T
        if x_dense is None:
            return
        xd = x_dense.reshape(-1, k).to(device=self.H_sum.device, dtype=self.H_sum.dtype)
        dx = (xd if scale is None else xd * scale) - xs  # (t, k)
        if not self.has_dense:
            self.materialise()
        self.G_sum.addmm_(dx.T, xs)  # G_sum += dX X^T
        self.D_sum.addmm_(dx.T, dx)  # D_sum += dX dX^T

    def materialise(self) -> None:
        """Make ``G_sum`` and ``D_sum`` real zero matrices (before adding or reducing into them)."""
        if not self.has_dense:
            self.G_sum = torch.zeros_like(self.H_sum)
            self.D_sum = torch.zeros_like(self.H_sum)

    def merged(self, other: LayerStats) -> LayerStats:
        """The statistics of the tokens of both: the sums and counts added (a new object)."""
        dense = self.has_dense or other.has_dense
        if dense:
            G = (self.G_sum + other.G_sum).contiguous()
            D = (self.D_sum + other.D_sum).contiguous()
        else:
            G, D = self.G_sum, self.D_sum
        nonzeros = [s.channel_nonzeros for s in (self, other) if s.channel_nonzeros.numel()]
        return LayerStats(
            H_sum=self.H_sum + other.H_sum,
            G_sum=G,
            D_sum=D,
            count=self.count + other.count,
            zeros=self.zeros + other.zeros,
            entries=self.entries + other.entries,
            channel_nonzeros=sum(nonzeros[1:], nonzeros[0].clone())
            if nonzeros
            else torch.zeros(0, dtype=torch.long),
        )

    def __add__(self, other: LayerStats) -> LayerStats:
        """``a + b`` is :meth:`merged`."""
        return self.merged(other)

    def _count_active(self, x: Tensor) -> None:
        """Add the per-channel nonzero counts of ``x`` (``(t, k)``) to ``channel_nonzeros``."""
        if x.shape[-1] != self.k:
            raise ValueError(f"expected inputs with {self.k} features, got shape {tuple(x.shape)}")
        counts = (x != 0).sum(dim=0).to(device="cpu", dtype=torch.long)
        if self.channel_nonzeros.numel() != self.k:
            self.channel_nonzeros = torch.zeros(self.k, dtype=torch.long)
        self.channel_nonzeros += counts

    @property
    def channel_activity(self) -> Tensor | None:
        """``P(x_j != 0)`` per input channel over the tokens seen (float64), None before any."""
        if not self.count or self.channel_nonzeros.numel() != self.k:
            return None
        return self.channel_nonzeros.to(torch.float64) / self.count

    @property
    def has_dense(self) -> bool:
        """True once a dense input was seen (``G`` and ``D`` are materialised matrices)."""
        return self.G_sum.stride() != (0, 0)

    @property
    def g(self) -> Tensor:
        """``diag(D)``: per input channel the mismatch energy ``rowsum(dX * dX) / m`` (length k)."""
        return torch.diagonal(self.D_sum) / max(self.count, 1)

    @property
    def H_dense(self) -> Tensor:
        """``X~ X~^T / m = H + G + G^T + D`` (the dense model's input Gram)."""
        total = self.H_sum + self.G_sum + self.G_sum.T + self.D_sum
        return total / self.count if self.count else total

    @property
    def act_sparsity(self) -> float:
        """Fraction of zero entries in the ``X^`` seen so far (0.0 before any input)."""
        return self.zeros / self.entries if self.entries else 0.0


def token_weights(x: Tensor, clip: float) -> Tensor:
    """Per-token scale ``min(1, clip * median(||x_t||) / ||x_t||)`` as a ``(t, 1)`` column.

    Tokens up to ``clip`` times the median norm keep weight 1; larger ones are scaled down to
    that norm. ``x`` is ``(t, k)``, one token per row.
    """
    norms = torch.linalg.vector_norm(x, dim=1)  # (t,)
    cap = clip * float(norms.median())
    if cap <= 0:
        return torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    return torch.clamp(cap / norms.clamp_min(1e-30), max=1.0).unsqueeze(1)
