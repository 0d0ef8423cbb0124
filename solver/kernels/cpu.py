"""Batch-1 ``y = W x`` kernels on CPU: dense, activation-sparse and dual-sparse (issue #13).

At decode time every linear layer is a matrix-vector product (``solver/math/speedup.py`` counts
its bytes). Three ways to run it, all in float32:

* **dense**: ``torch.mv`` (the reference).
* **activation-sparse**: a channel-major copy ``W^T`` (``k x n``); only the rows of ``W^T``
  (columns of ``W``) whose input ``x_j`` is non-zero are read, as contiguous streams.
* **dual-sparse**: per input channel ``j``, a bitmap of its non-zero weights (one 16-bit word per
  16 output rows) and the non-zero values packed in row order (the storage format that
  ``speedup.py`` assumes). Only the active channels are read; with AVX-512 each 16-row word
  becomes one unaligned load, one in-register ``vexpandps`` and one FMA. Without AVX-512 the
  bits are walked one by one. Weight-only sparsity is the same kernel with a dense ``x``.

Both compiled kernels split the output rows into tiles of 256 (accumulated in a small local
buffer) and spread the tiles over ``at::parallel_for``, so ``torch.set_num_threads`` sets their
thread count (1 thread or many).

Why a C++ extension (``torch.utils.cpp_extension``) and not numba, measured on this project's
2-core AMD EPYC (Zen 4) VM, 1 thread, float32, shape 1536 x 576 at X50% / W50%: dense
``torch.mv`` 67 us; C++ activation-sparse 35 us; numba (``parallel=True``, ``fastmath``)
activation-sparse 266 us and dual-sparse 230 us, dominated by the parallel-region launch and the
per-call argument unboxing. numba also cannot reach the AVX-512 expand instruction that makes the
bitmap format cheap to decode, and a C++ extension adds no dependency (torch and g++ are already
needed). The price is a one-off build (~30 s, cached under ``TORCH_EXTENSIONS_DIR``); a missing
compiler or a failed build falls back to the torch reference path (:func:`backend` says
``torch-fallback``, :func:`fallback_reason` why), never a traceback.

Measured (``benchmarks/decode_speed.py``, 1 thread, load ~4.5 on 2 shared cores): the
activation-sparse kernel reaches 1.72x over dense at X50% for a SmolLM2 block (byte bound
1.99x). The dual-sparse kernel is correct but *slower* than dense (0.63x at W50% + X50%, bound
3.74x; weight-only ~0.32x whatever the density): with the layers resident in L2/L3 it is bound
by the bitmap decode (one expand per 16 rows, plus the popcount chain that advances the value
pointer), not by bytes. Unrolling four words per step did not help. Open: fp16/bf16 values
(halving the bytes), a tile-major layout, or per-word value offsets.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

TILE_ROWS = 256
"""Output rows per tile (one parallel work item); a multiple of :data:`GROUP_ROWS`."""

GROUP_ROWS = 16
"""Output rows per bitmap word (one AVX-512 register of float32)."""

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

static constexpr int64_t TILE = 256;
static constexpr int64_t GROUP = 16;

static std::vector<int32_t> active_channels(const float* x, int64_t k) {
  std::vector<int32_t> act;
  act.reserve(k);
  for (int64_t j = 0; j < k; ++j)
    if (x[j] != 0.f) act.push_back(static_cast<int32_t>(j));
  return act;
}

// y (n) = sum over active j of x_j * wt[j, :], wt: (k, n) channel-major.
torch::Tensor act_gemv(const torch::Tensor& wt, const torch::Tensor& x) {
  const int64_t k = wt.size(0), n = wt.size(1);
  auto y = torch::empty({n}, x.options());
  const float* w = wt.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const std::vector<int32_t> act = active_channels(xp, k);
  const int64_t m = static_cast<int64_t>(act.size());
  const int64_t tiles = (n + TILE - 1) / TILE;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    alignas(64) float acc[TILE];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * TILE, rows = std::min(TILE, n - r0);
      std::memset(acc, 0, sizeof(acc));
      for (int64_t a = 0; a < m; ++a) {
        const float xj = xp[act[a]];
        const float* col = w + static_cast<int64_t>(act[a]) * n + r0;
        for (int64_t r = 0; r < rows; ++r) acc[r] += xj * col[r];
      }
      std::memcpy(yp + r0, acc, rows * sizeof(float));
    }
  });
  return y;
}

// masks (k, G) 16-bit words, bit b of word g = row 16 g + b is non-zero; values packed per
// column in row order (padded by 16 at the end); offsets (tiles, k): the index in values of
// column j's first non-zero at or below the tile's first row.
torch::Tensor dual_gemv(const torch::Tensor& masks, const torch::Tensor& values,
                        const torch::Tensor& offsets, const torch::Tensor& x, int64_t n) {
  const int64_t k = masks.size(0), G = masks.size(1);
  auto y = torch::empty({n}, x.options());
  const uint16_t* mk = reinterpret_cast<const uint16_t*>(masks.data_ptr<int16_t>());
  const float* vals = values.data_ptr<float>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const std::vector<int32_t> act = active_channels(xp, k);
  const int64_t m = static_cast<int64_t>(act.size());
  const int64_t tiles = offsets.size(0);
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    alignas(64) float acc[TILE];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * TILE, rows = std::min(TILE, n - r0);
      const int64_t g0 = r0 / GROUP, g1 = std::min(G, g0 + TILE / GROUP);
      std::memset(acc, 0, sizeof(acc));
      for (int64_t a = 0; a < m; ++a) {
        const int64_t j = act[a];
        const float xj = xp[j];
        const float* v = vals + off[t * k + j];
        const uint16_t* words = mk + j * G;
#if defined(__AVX512F__)
        const __m512 xv = _mm512_set1_ps(xj);
        for (int64_t g = g0; g < g1; ++g) {
          const uint16_t word = words[g];
          if (!word) continue;
          const __m512 w = _mm512_maskz_expand_ps(word, _mm512_loadu_ps(v));
          float* out = acc + (g - g0) * GROUP;
          _mm512_storeu_ps(out, _mm512_fmadd_ps(xv, w, _mm512_loadu_ps(out)));
          v += __builtin_popcount(word);
        }
#else
        for (int64_t g = g0; g < g1; ++g) {
          uint32_t word = words[g];
          float* out = acc + (g - g0) * GROUP;
          while (word) {
            out[__builtin_ctz(word)] += xj * *v++;
            word &= word - 1;
          }
        }
#endif
      }
      std::memcpy(yp + r0, acc, rows * sizeof(float));
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("act_gemv", &act_gemv, "activation-sparse GEMV");
  m.def("dual_gemv", &dual_gemv, "dual-sparse GEMV");
}
"""

_CFLAGS = ["-O3", "-march=native", "-fno-math-errno"]

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _extension() -> Any | None:
    """The compiled module, built once per process (None when the build failed)."""
    with _lock:
        if "module" not in _state:
            _state["module"], _state["reason"] = _build()
        return _state["module"]


def _build() -> tuple[Any | None, str | None]:
    if os.environ.get("DUOGPT_KERNELS") == "torch":
        return None, "DUOGPT_KERNELS=torch asks for the torch reference path"
    digest = hashlib.sha1((_SOURCE + " ".join(_CFLAGS)).encode()).hexdigest()[:10]
    try:
        from torch.utils.cpp_extension import load_inline

        module = load_inline(  # type: ignore[no-untyped-call]
            name=f"duogpt_gemv_{digest}",
            cpp_sources=[_SOURCE],
            extra_cflags=_CFLAGS,
            verbose=False,
        )
    except Exception as exc:  # a missing compiler, ninja or headers: fall back, say why
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    return module, None


def backend() -> str:
    """``cpp`` when the compiled kernels load, else ``torch-fallback`` (builds on first call)."""
    return "cpp" if _extension() is not None else "torch-fallback"


def fallback_reason() -> str | None:
    """Why the compiled kernels are not used (None when they are)."""
    _extension()
    reason: str | None = _state.get("reason")
    return reason


@dataclass(frozen=True)
class DualWeight:
    """An ``n x k`` weight stored for the dual-sparse kernel (module docstring).

    Attributes:
        masks: ``(k, ceil(n / 16))`` int16 bitmap words (read as unsigned).
        values: the non-zero weights, column by column in row order, then 16 zeros of padding.
        offsets: ``(tiles, k)`` int64, where column ``j``'s values start for each row tile.
        rows: ``n``.
    """

    masks: Tensor
    values: Tensor
    offsets: Tensor
    rows: int

    def nbytes(self) -> int:
        """Bytes of the stored weight (bitmaps + values, offsets excluded as in speedup.py)."""
        nnz = self.values.numel() - GROUP_ROWS
        return self.masks.numel() * 2 + nnz * self.values.element_size()


def pack_dual(weight: Tensor) -> DualWeight:
    """The dual-sparse storage of a float ``n x k`` weight (zeros are the pruned entries)."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    w = weight.detach().to("cpu", torch.float32)
    n, k = w.shape
    tiles = -(-n // TILE_ROWS)
    padded = torch.zeros(tiles * TILE_ROWS, k)
    padded[:n] = w
    mask_t = (padded != 0).t().contiguous()  # (k, n_pad), channel-major
    bits = 1 << torch.arange(GROUP_ROWS, dtype=torch.int32)
    words = (mask_t.reshape(k, -1, GROUP_ROWS).to(torch.int32) * bits).sum(-1)  # (k, G) < 2^16
    words = torch.where(words >= 1 << 15, words - (1 << 16), words).to(torch.int16)
    groups = -(-n // GROUP_ROWS)
    values = padded.t().contiguous()[mask_t]  # column by column, rows ascending
    values = torch.cat([values, torch.zeros(GROUP_ROWS)])
    per_tile = mask_t.reshape(k, tiles, TILE_ROWS).sum(-1).to(torch.int64)  # (k, tiles)
    col_start = torch.cumsum(per_tile.sum(-1), 0) - per_tile.sum(-1)  # (k,)
    before = torch.cumsum(per_tile, 1) - per_tile  # non-zeros above each tile, per column
    offsets = (col_start[:, None] + before).t().contiguous()  # (tiles, k)
    return DualWeight(words[:, :groups].contiguous(), values, offsets, int(n))


def dense_gemv(weight: Tensor, x: Tensor) -> Tensor:
    """``W x`` with torch (the reference): ``weight`` ``(n, k)``, ``x`` ``(k,)``."""
    return torch.mv(weight, x)


def act_gemv(weight_t: Tensor, x: Tensor) -> Tensor:
    """``W x`` reading only the columns of the non-zero inputs; ``weight_t`` is ``W^T``
    (``(k, n)`` contiguous float32), ``x`` ``(k,)`` contiguous float32."""
    ext = _extension()
    if ext is None:
        active = torch.nonzero(x).reshape(-1)
        return torch.mv(weight_t.index_select(0, active).t(), x.index_select(0, active))
    out: Tensor = ext.act_gemv(weight_t, x)
    return out


def dual_gemv(packed: DualWeight, x: Tensor) -> Tensor:
    """``W x`` reading only the non-zero weights of the active channels (``x`` float32)."""
    ext = _extension()
    if ext is None:
        return _dual_reference(packed, x)
    out: Tensor = ext.dual_gemv(packed.masks, packed.values, packed.offsets, x, packed.rows)
    return out


def _dual_reference(packed: DualWeight, x: Tensor) -> Tensor:
    """The dual-sparse product in torch, from the packed format (the fallback path)."""
    return torch.mv(unpack_dual(packed), x)


def unpack_dual(packed: DualWeight) -> Tensor:
    """The dense ``n x k`` weight back from its dual-sparse storage."""
    k, groups = packed.masks.shape
    words = packed.masks.to(torch.int32) & 0xFFFF
    bits = (words[:, :, None] >> torch.arange(GROUP_ROWS, dtype=torch.int32)) & 1
    mask_t = bits.reshape(k, groups * GROUP_ROWS)[:, : packed.rows].bool()
    dense_t = torch.zeros(k, packed.rows)
    dense_t[mask_t] = packed.values[: int(mask_t.sum())]
    return dense_t.t().contiguous()
