"""Streaming statistics of a linear layer's input (ALGORITHM.md §2).

For one ``nn.Linear`` with ``k`` inputs the solver needs, over the ``m`` calibration tokens,

* ``H = X^ X^T / m`` — the Gram ("Hessian") of the compressed-model input ``X^``,
* ``G = dX X^T / m`` — the cross term with the input mismatch ``dX = X~ - X^``,
* ``D = dX dX^T / m`` — the mismatch's own Gram, whose diagonal is ``g`` of §2.

All three are kept as running means so that they always share one scale (§2: "H, G and g must
share the same scale factor"), however many batches were added. Tokens are rows here: a batch is a
``(..., k)`` tensor whose leading dimensions are all tokens, so ``x^T x`` is ``X X^T`` in the
paper's column convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LayerStats:
    """Streaming statistics of one linear layer's input (ALGORITHM.md §2), all scaled by 1/m.

    Attributes:
        H: ``k x k``, ``X^ X^T / m`` (the sparse / compressed-stream input).
        G: ``k x k``, ``dX X^T / m`` with ``dX = X~ - X^`` (``X~`` = the dense model's input).
            Until a dense input is first seen it is a zero tensor that takes no memory.
        D: ``k x k``, ``dX dX^T / m`` (same remark as ``G``).
        count: tokens ``m`` seen.
        zeros: zero entries seen in ``X^``.
        entries: entries seen in ``X^``.
        channel_nonzeros: per input channel, the tokens whose entry was nonzero (int64, length
            ``k``; empty before the first batch): the activity ``P(x_j != 0)`` that the decode
            cost model (:mod:`solver.math.speedup`) needs. By default counted on ``X^``; see
            :meth:`add`'s ``x_active``.
    """

    H: Tensor
    G: Tensor
    D: Tensor
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
        return cls(H=H, G=lazy_zero, D=lazy_zero)

    @property
    def k(self) -> int:
        """Input features of the layer."""
        return self.H.shape[0]

    def add(
        self,
        x_sparse: Tensor,
        x_dense: Tensor | None = None,
        *,
        x_active: Tensor | None = None,
        token_clip: float = 0.0,
    ) -> None:
        """Fold one batch of inputs into the running means.

        Like SparseGPT's ``H *= m_old / m_new; H += x x^T / m_new``, applied to ``H``, ``G`` and
        ``D`` alike so that they keep one scale.

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
        xs = x_sparse.reshape(-1, k).to(device=self.H.device, dtype=self.H.dtype)  # (t, k)
        t = xs.shape[0]
        if t == 0:
            return
        self.entries += xs.numel()
        self.zeros += int(xs.numel() - torch.count_nonzero(xs).item())
        self._count_active(xs if x_active is None else x_active.reshape(-1, k))
        m_old, m_new = self.count, self.count + t
        keep, new = m_old / m_new, 1.0 / m_new
        self.count = m_new

        scale = token_weights(xs, token_clip) if token_clip > 0 else None  # (t, 1) or None
        if scale is not None:
            xs = xs * scale
        self.H.mul_(keep).addmm_(xs.T, xs, alpha=new)  # H = (m_old H + X^ X^T) / m_new
        if x_dense is None:
            if self.has_dense:
                self.G.mul_(keep)
                self.D.mul_(keep)
            return
        if x_dense.shape != x_sparse.shape:
            raise ValueError(
                f"dense input shape {tuple(x_dense.shape)} differs from "
                f"sparse input shape {tuple(x_sparse.shape)}"
            )
        xd = x_dense.reshape(-1, k).to(device=self.H.device, dtype=self.H.dtype)
        dx = (xd if scale is None else xd * scale) - xs  # (t, k)
        if not self.has_dense:
            self.G = torch.zeros_like(self.H)
            self.D = torch.zeros_like(self.H)
        self.G.mul_(keep).addmm_(dx.T, xs, alpha=new)  # G = dX X^T / m
        self.D.mul_(keep).addmm_(dx.T, dx, alpha=new)  # D = dX dX^T / m

    def merged(self, other: LayerStats) -> LayerStats:
        """The statistics of the tokens of both (running means weighted by their counts)."""
        total = self.count + other.count
        if not total:
            return LayerStats(H=self.H.clone(), G=self.G, D=self.D)
        a, b = self.count / total, other.count / total
        dense = self.has_dense or other.has_dense
        H = self.H * a + other.H * b
        G = self.G * a + other.G * b if dense else self.G
        D = self.D * a + other.D * b if dense else self.D
        nonzeros = [s.channel_nonzeros for s in (self, other) if s.channel_nonzeros.numel()]
        return LayerStats(
            H=H,
            G=G.contiguous() if dense else G,
            D=D.contiguous() if dense else D,
            count=total,
            zeros=self.zeros + other.zeros,
            entries=self.entries + other.entries,
            channel_nonzeros=sum(nonzeros[1:], nonzeros[0].clone())
            if nonzeros
            else torch.zeros(0, dtype=torch.long),
        )

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
        return self.G.stride() != (0, 0)

    @property
    def g(self) -> Tensor:
        """``diag(D)``: per input channel the mismatch energy ``rowsum(dX * dX) / m`` (length k)."""
        return torch.diagonal(self.D).clone()

    @property
    def H_dense(self) -> Tensor:
        """``X~ X~^T / m = H + G + G^T + D`` (the dense model's input Gram)."""
        return self.H + self.G + self.G.T + self.D

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
