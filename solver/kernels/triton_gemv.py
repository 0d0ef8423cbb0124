"""Batch-1 ``y = W x`` kernels on CUDA, written in Triton: activation- and dual-sparse (#13).

The GPU twin of :mod:`solver.kernels.cpu`, with the same data layouts and call shapes, in the
style of TEAL's decode GEMV (Liu et al. 2024, "Training-Free Activation Sparsity in Large
Language Models", section 4.3): the weight is stored channel-major, and a program skips the
weight rows whose input is zero with a *masked load*, which issues no memory transaction for
the masked lanes. Values may be float16, bfloat16 or float32; products are summed in float32
and rounded once, to the weight's dtype, at the end.

* **activation-sparse** (:func:`act_gemv`): ``W^T`` (``k x n``). The grid is
  ``(n / BLOCK_N, k / BLOCK_K)``: each program loads ``BLOCK_K`` inputs, keeps the non-zero
  ones, reads only their ``BLOCK_N``-wide row segments of ``W^T`` and adds its partial sums
  into a float32 output with atomics (split-K, so a 4096-row layer still fills every SM).
* **dual-sparse** (:func:`dual_gemv`): the bitmap format of :func:`solver.kernels.cpu.pack_dual`
  as it is, values in the weight's dtype (:func:`pack_dual`). One program takes one tile of
  256 output rows and ``DUAL_BLOCK_K`` channels as a ``[channels, 16 words, 16 bits]`` block:
  it loads the 16-bit words of the active channels, turns them into per-row value positions
  with a popcount and a prefix sum over the tile's words (the tile's start comes from the
  format's per-tile offsets), and loads the packed values of the set bits only. Inactive
  channels read nothing, so with a dense ``x`` it is the weight-only kernel. At 50% weight
  sparsity in float16 it reads 1.125 bytes per weight (values + words) against 2 dense.

Unlike the CPU build, a pruned weight stays in its dtype here: a float16 layer is half the
bytes of a float32 one, so the byte bounds of ``solver/math/speedup.py`` take
``weight.element_size()``.

Importing this module imports ``triton`` when it is installed (and still succeeds when it is
not: :data:`UNAVAILABLE` then says why, and the kernels raise). Only
:func:`solver.kernels.sparse_linear.load_triton` imports it, for a weight on a GPU, and falls
back to the CPU path or ``F.linear`` when the kernels cannot run. The kernels also run on CPU
tensors under Triton's interpreter (``TRITON_INTERPRET=1`` set before this module is
imported), which is how the tests check them on machines without a GPU. Nothing here has
been timed on a GPU yet: the block sizes are first guesses, to tune with
``duogpt speed --device cuda``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from solver.kernels import cpu
from solver.kernels.cpu import GROUP_ROWS, TILE_ROWS, DualWeight

UNAVAILABLE: str | None = None
"""Why ``triton`` did not import (None when it did)."""

try:
    import triton
    import triton.language as tl
except ImportError as exc:  # a CPU-only install: this module imports, its kernels do not run
    triton = None
    tl = None
    UNAVAILABLE = f"triton is not installed ({type(exc).__name__}: {exc})"

BLOCK_N = 128
"""Output rows per activation-sparse program (one contiguous segment of a ``W^T`` row)."""

BLOCK_K = 32
"""Input channels per activation-sparse program (the split-K step)."""

DUAL_BLOCK_K = 16
"""Input channels per dual-sparse program (its tile is ``TILE_ROWS`` output rows)."""

WORDS_PER_TILE = TILE_ROWS // GROUP_ROWS
"""Bitmap words per channel per dual-sparse tile (16)."""

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
"""The value dtypes the kernels take."""


def _not_compiled(fn: Callable[..., None]) -> Callable[..., None]:
    return fn  # without triton the kernels stay plain (never called) functions


jit: Callable[[Callable[..., None]], Any] = _not_compiled if triton is None else triton.jit


@jit
def _act_kernel(wt, x, y, k, n, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):  # type: ignore[no-untyped-def]
    """``y[cols] += W^T[rows, cols]^T x[rows]`` for one block, over the active rows only."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # output rows   [BN]
    rows = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # input channels [BK]
    xv = tl.load(x + rows, mask=rows < k, other=0.0).to(tl.float32)
    active = xv != 0.0
    keep = active[:, None] & (cols[None, :] < n)  # [BK, BN]: no load issued where False
    w = tl.load(wt + rows[:, None].to(tl.int64) * n + cols[None, :], mask=keep, other=0.0)
    partial = tl.sum(w.to(tl.float32) * xv[:, None], axis=0)  # [BN]
    tl.atomic_add(y + cols, partial, mask=cols < n, sem="relaxed")


@jit
def _popcount16(v):  # type: ignore[no-untyped-def]
    """Set bits of each 16-bit value held in an int32 (SWAR, no intrinsic needed)."""
    v = v - ((v >> 1) & 0x5555)
    v = (v & 0x3333) + ((v >> 2) & 0x3333)
    v = (v + (v >> 4)) & 0x0F0F
    return (v + (v >> 8)) & 0x1F


@jit
def _dual_kernel(  # type: ignore[no-untyped-def]
    masks,
    values,
    offsets,
    x,
    y,
    k,
    n,
    groups,
    BLOCK_K: tl.constexpr,
    WORDS: tl.constexpr,
    GROUP: tl.constexpr,
):
    """``y[tile] +=`` the packed non-zeros of one block of active channels, for one row tile."""
    tile = tl.program_id(0)
    chans = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BK]
    xv = tl.load(x + chans, mask=chans < k, other=0.0).to(tl.float32)
    active = xv != 0.0
    word_ids = tile * WORDS + tl.arange(0, WORDS)  # [W], within the channel's bitmap
    keep = active[:, None] & (word_ids[None, :] < groups)  # [BK, W]
    words = tl.load(masks + chans[:, None] * groups + word_ids[None, :], mask=keep, other=0)
    words = words.to(tl.int32) & 0xFFFF  # the int16 storage, read as unsigned
    counts = _popcount16(words)
    before = tl.cumsum(counts, axis=1) - counts  # values of the earlier words in the tile
    start = tl.load(offsets + tile * k + chans, mask=active, other=0)  # [BK] int64
    bit = tl.arange(0, GROUP)  # [G]
    words3 = words[:, :, None]  # [BK, W, 1]
    is_set = ((words3 >> bit[None, None, :]) & 1) != 0  # [BK, W, G]
    below = _popcount16(words3 & ((1 << bit[None, None, :]) - 1))  # set bits under each row
    where = start[:, None, None] + (before[:, :, None] + below).to(tl.int64)
    v = tl.load(values + where, mask=is_set, other=0.0).to(tl.float32)
    partial = tl.sum(v * xv[:, None, None], axis=0)  # [W, G]
    out = tile * (WORDS * GROUP) + tl.arange(0, WORDS)[:, None] * GROUP + bit[None, :]
    tl.atomic_add(y + out, partial, mask=out < n, sem="relaxed")


def _check(x: Tensor, k: int, dtype: torch.dtype) -> None:
    if UNAVAILABLE is not None:
        raise RuntimeError(UNAVAILABLE)
    if dtype not in DTYPES:
        raise ValueError(f"weight dtype {dtype} is not one of float16, bfloat16, float32")
    if x.dim() != 1 or x.numel() != k or not x.is_contiguous():
        raise ValueError(f"x must be a contiguous vector of {k}, got shape {tuple(x.shape)}")


def act_gemv(
    weight_t: Tensor, x: Tensor, *, block_k: int = BLOCK_K, block_n: int = BLOCK_N
) -> Tensor:
    """``W x`` reading only the rows of ``W^T`` whose input is non-zero.

    Args:
        weight_t: ``W^T``, ``(k, n)`` contiguous, on the kernel's device.
        x: ``(k,)`` contiguous, same device (any of :data:`DTYPES`).
        block_k: input channels per program (a power of two).
        block_n: output rows per program (a power of two).

    Returns:
        ``(n,)`` in ``weight_t``'s dtype.
    """
    k, n = weight_t.shape
    _check(x, k, weight_t.dtype)
    if not weight_t.is_contiguous():
        raise ValueError("weight_t must be contiguous (k, n): pass W.t().contiguous()")
    y = torch.zeros(n, dtype=torch.float32, device=weight_t.device)
    if n and k:
        grid = (triton.cdiv(n, block_n), triton.cdiv(k, block_k))
        _act_kernel[grid](weight_t, x, y, k, n, BLOCK_K=block_k, BLOCK_N=block_n)
    return y.to(weight_t.dtype)


def pack_dual(weight: Tensor) -> DualWeight:
    """The dual-sparse storage of ``weight`` (``n x k``), on its device, values in its dtype.

    The format is :func:`solver.kernels.cpu.pack_dual`'s (built on the CPU, then moved).
    """
    if weight.dtype not in DTYPES:
        raise ValueError(f"weight dtype {weight.dtype} is not one of float16, bfloat16, float32")
    # float32 holds every float16 / bfloat16 value exactly; the Triton kernel reads the bitmap
    packed = cpu.pack_dual(weight, kernel="bitmap")
    device = weight.device
    return DualWeight(
        masks=packed.masks.to(device),
        values=packed.values.to(device, weight.dtype),
        offsets=packed.offsets.to(device),
        rows=packed.rows,
    )


def dual_gemv(packed: DualWeight, x: Tensor, *, block_k: int = DUAL_BLOCK_K) -> Tensor:
    """``W x`` reading only the non-zero weights of the active channels.

    Args:
        packed: from :func:`pack_dual` (on the kernel's device).
        x: ``(k,)`` contiguous, same device; a dense ``x`` gives the weight-only product.
        block_k: channels per program (a power of two).

    Returns:
        ``(rows,)`` in the values' dtype.
    """
    k, groups = packed.masks.shape
    n = packed.rows
    _check(x, k, packed.values.dtype)
    y = torch.zeros(n, dtype=torch.float32, device=x.device)
    if n and k:
        grid = (packed.offsets.shape[0], triton.cdiv(k, block_k))
        _dual_kernel[grid](
            packed.masks,
            packed.values,
            packed.offsets,
            x,
            y,
            k,
            n,
            groups,
            BLOCK_K=block_k,
            WORDS=WORDS_PER_TILE,
            GROUP=GROUP_ROWS,
        )
    return y.to(packed.values.dtype)


def dense_gemv(weight: Tensor, x: Tensor) -> Tensor:
    """``W x`` with torch (cuBLAS on CUDA): the reference the sparse kernels are timed against."""
    return torch.mv(weight, x)
