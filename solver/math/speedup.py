"""Analytic cost model of one decode step: bytes and FLOPs per linear layer (ALGORITHM.md §1).

At decode time (batch 1, one new token) every linear layer is a matrix-vector product ``W x``
with ``W`` of shape ``n x k``. This module counts, for one token, what four ways of executing it
must read and compute, from the layer's actual mask and its measured per-input-channel activity
``a_j = P(x_j != 0)``:

* **dense** GEMV: every weight is read and used: ``2 n k`` FLOPs.
* **weight-sparse** (static): only the nonzero weights: ``2 nnz(W)`` FLOPs.
* **activation-sparse** (dynamic column skipping, dense weights): a zero input ``x_j`` means that
  column ``j`` of ``W`` is neither read nor used: expected ``sum_j a_j 2 n`` FLOPs.
* **dual-sparse** (spMspV): both: expected ``sum_j a_j 2 nnz(W[:, j])`` FLOPs.

The expectations are exact by linearity (no independence between channels is assumed); ``a_j``
comes from the calibration tokens, so the figures are as good as the calibration data is
representative.

Storage formats assumed for the byte counts (``weight_bytes`` per stored value, 2 = fp16/bf16):

* dense: ``n k`` values, column-major or row-major alike.
* sparse weights (weight-sparse and dual-sparse): column-major bitmap: per column a bitmap of
  ``n`` bits (``ceil(n / 8)`` bytes) followed by the column's nonzero values. Column ``j`` costs
  ``ceil(n / 8) + nnz(W[:, j]) * weight_bytes`` bytes; column offsets are not counted.
* activations: the input (``k`` values) is read whole (to find its nonzeros) and the output
  (``n`` values) written, ``act_bytes`` each, in every mode.

These are *bounds*, not predictions: a kernel reaches the bytes ratio only when it is memory-bound
(decode usually is) and loses nothing to irregular access; attention, embeddings, norms and the
LM head are not counted.

The module imports torch only inside the functions that take tensors, so the report can use the
aggregation helpers without loading it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

MODES = ("dense", "weight", "act", "dual")
"""Execution modes, in the order they are reported."""

MODE_NAMES = {
    "dense": "dense GEMV",
    "weight": "weight-sparse",
    "act": "activation-sparse",
    "dual": "dual-sparse (spMspV)",
}
"""Readable names of :data:`MODES`."""

METRICS = ("flops", "bytes")
"""What is counted per mode."""

KEYS = tuple(f"{mode}_{metric}" for mode in MODES for metric in METRICS)
"""The keys of a cost dict, e.g. ``dual_bytes``."""


def column_nonzeros(weight: Tensor) -> Tensor:
    """``nnz(W[:, j])`` for every input column ``j`` of an ``n x k`` weight (float64, length k)."""
    import torch

    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    return (weight != 0).sum(dim=0).to(torch.float64)


def decode_costs(
    col_nonzeros: Sequence[float] | Tensor,
    rows: int,
    activity: Sequence[float] | Tensor | None = None,
    *,
    weight_bytes: float = 2.0,
    act_bytes: float = 2.0,
) -> dict[str, float]:
    """Bytes and FLOPs of one decode step of one layer in the four modes (module docstring).

    Args:
        col_nonzeros: ``nnz(W[:, j])`` per input column (length ``k``).
        rows: ``n``, the layer's output features.
        activity: ``P(x_j != 0)`` per input column (length ``k``, values in [0, 1]); ``None``
            means every input is always active (no activation sparsity).
        weight_bytes: bytes per stored weight value.
        act_bytes: bytes per activation value.

    Returns:
        Plain floats under :data:`KEYS` (``dense_flops``, ``dense_bytes``, ``weight_flops``...).

    Raises:
        ValueError: lengths differ, or a count or probability is out of range.
    """
    nnz = _floats(col_nonzeros)
    k = len(nnz)
    act = [1.0] * k if activity is None else _floats(activity)
    if len(act) != k:
        raise ValueError(f"activity has {len(act)} entries for {k} columns")
    if rows < 0 or any(not 0 <= c <= rows for c in nnz):
        raise ValueError(f"column nonzero counts must lie in [0, {rows}]")
    if any(not 0 <= a <= 1 for a in act):
        raise ValueError("activity values must lie in [0, 1]")
    n = float(rows)
    bitmap = math.ceil(rows / 8)  # bytes of one column's bitmap
    io = (k + n) * act_bytes  # read the input, write the output
    active = math.fsum(act)  # expected active input channels per token
    return {
        "dense_flops": 2.0 * n * k,
        "dense_bytes": n * k * weight_bytes + io,
        "weight_flops": 2.0 * math.fsum(nnz),
        "weight_bytes": math.fsum(bitmap + c * weight_bytes for c in nnz) + io,
        "act_flops": 2.0 * n * active,
        "act_bytes": n * weight_bytes * active + io,
        "dual_flops": 2.0 * math.fsum(a * c for a, c in zip(act, nnz, strict=True)),
        "dual_bytes": math.fsum(
            a * (bitmap + c * weight_bytes) for a, c in zip(act, nnz, strict=True)
        )
        + io,
    }


def _floats(values: Sequence[float] | Tensor) -> list[float]:
    """A flat list of Python floats from a sequence or a tensor."""
    data: Any = values
    if hasattr(data, "detach"):
        data = data.detach().cpu().reshape(-1).tolist()
    return [float(v) for v in data]


def layer_decode_costs(
    weight: Tensor,
    activity: Tensor | None = None,
    *,
    weight_bytes: float = 2.0,
    act_bytes: float = 2.0,
) -> dict[str, float]:
    """:func:`decode_costs` from a (pruned) weight and its per-column activity."""
    return decode_costs(
        column_nonzeros(weight.detach().cpu()),
        int(weight.shape[0]),
        None if activity is None else activity.detach().cpu(),
        weight_bytes=weight_bytes,
        act_bytes=act_bytes,
    )


def total(costs: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum cost dicts key by key (only :data:`KEYS`; a missing key counts as 0)."""
    out = dict.fromkeys(KEYS, 0.0)
    for cost in costs:
        for key in KEYS:
            out[key] += float(cost.get(key, 0.0))
    return out


def speedups(costs: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per mode, the dense cost divided by the mode's cost: ``{mode: {"flops": x, "bytes": x}}``.

    A ratio is ``inf`` when the mode's cost is 0 and the dense cost is not, ``nan`` when both are.
    """
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        out[mode] = {}
        for metric in METRICS:
            dense, cost = costs.get(f"dense_{metric}", 0.0), costs.get(f"{mode}_{metric}", 0.0)
            if cost > 0:
                out[mode][metric] = dense / cost
            else:
                out[mode][metric] = math.inf if dense > 0 else math.nan
    return out
