"""Batch-1 ``y = W x`` kernels on CPU: dense, activation-sparse and dual-sparse (issue #13).

At decode time every linear layer is a matrix-vector product (``solver/math/speedup.py`` counts
its bytes). Three ways to run it, all in float32:

* **dense**: ``torch.mv`` (the reference).
* **activation-sparse** (:func:`act_gemv`): a channel-major copy ``W^T`` (``k x n``); only the
  rows of ``W^T`` (columns of ``W``) whose input ``x_j`` is non-zero are read, as contiguous
  streams.
* **dual-sparse** (:func:`dual_gemv`): per input channel ``j``, a bitmap of its non-zero weights
  (one 16-bit word per 16 output rows) and the non-zero values packed in row order (the storage
  format that ``speedup.py`` assumes), read for the active channels only. Weight-only sparsity is
  the same kernel with a dense ``x``. Where the bitmap decode costs more than the bytes it saves
  (on this project's machine: every SmolLM2 layer), :func:`pack_dual` also keeps ``W^T`` with its
  zeros and :func:`dual_gemv` runs the activation-sparse kernel on it instead (the dispatcher
  below); both kernels add the same products in the same order, so the result is bit-identical
  whichever runs.

Both compiled kernels split the output rows into tiles of 256 and spread the tiles over
``at::parallel_for``, so ``torch.set_num_threads`` sets their thread count. With AVX-512 (F, BW,
VL, VPOPCNTDQ; ``-march=native``) a tile's 256 accumulators stay in 16 zmm registers over every
active channel (a template per tile height, 1..16 groups of 16 rows; partial groups are masked):

* activation-sparse: per channel, 16 unaligned loads of its ``W^T`` segment and 16 FMAs; the
  segment of the channel 4 places ahead is prefetched (DRAM-resident weights at decode time).
* bitmap: per channel, the tile's 16 words are loaded at once, ``vpopcntd`` plus a 4-step
  in-register prefix sum gives each group's start in the packed values, then per group one
  unaligned load, one ``vexpandps`` masked by the word (read straight into a mask register) and
  one FMA. No serial pointer chain, no accumulator round trip through memory.

Without AVX-512 the same tiles run as plain loops (the bits walked one by one); the tests build
that path too (``-mno-avx512f``).

**Fused top-k** (:func:`act_gemv_topk`, :func:`dual_gemv_topk`, :func:`topk_gemv`): for
decode with the ``topk`` activation rule the kernel takes the dense token and selects the kept
channels itself: the magnitudes' bits (``|x|`` without its sign bit, monotone for non-NaN
floats), one ``std::nth_element`` for the cut, then the channels above it in ascending order,
so the products are the ones, in the order, of the kernel on ``topk_sparsify(x)``: the result
is bit-identical. Where two equal non-zero magnitudes straddle the cut (the kept set would
depend on how ``torch.topk`` breaks the tie) or ``x`` holds NaN, it declines (None) and the
caller takes the reference path. 1-2 us per call for ``k`` of 576 or 1536, against ~20 us for
the ``ActivationSparsifier`` hook it replaces at decode (``SparseLinear.forward``).

**Dispatcher** (:func:`choose_kernel`): :func:`pack_dual` (``kernel="auto"``, the default;
``DUOGPT_DUAL_KERNEL=bitmap|act`` or the ``kernel`` argument force one) times both kernels once
per layer shape, density (to 5%) and thread count, on a 50%-sparse input, best of 5 interleaved
rounds (a few ms per new key), and keeps the faster. Both visit only the active channels, so the
ratio barely depends on the input's density. The price of ``act`` is memory: ``W^T`` is kept
beside the bitmap format.

Measured on this project's 2-core AMD EPYC VM (AVX-512), 1 thread, float32, with the other
benchmark processes paused (``results/decode-speed-*.txt``). Per SmolLM2 block (7 layers) at
W50% + X50%, x over dense ``torch.mv`` (175 us), before -> after this version: activation-sparse
1.74x -> 2.17x (byte bound 1.99x: the register tile also beats ``torch.mv`` at equal bytes,
1.27-1.37x with a dense ``x``), weight-only 0.33x -> 1.26x (bound 1.88x), dual 0.65x -> 2.15x
(bound 3.74x; the ``act`` kernel on the zero-filled ``W^T`` is chosen for every shape). Per shape
at W50% + X50%, dual: 576x576 0.63x -> 2.45x, 192x576 0.59x -> 2.00x, 1536x576 0.67x -> 2.14x,
576x1536 0.63x -> 2.00x; activation-only at X50% for ``k = 1536``: 1.54x -> 2.00x. End to end
(``duogpt speed``, a default DuoGPT run): dense 27.1 tok/s, act-only 38.5 (1.42x), dual 38.3
(1.41x); the decoder linears go from 27.2 to 12.7 ms a token (2.14x, streaming from DRAM), the
rest is the dense ``lm_head`` (7.3 ms) and the top-k activation hooks (~4.3 ms). With the fused
top-k (above) in place of the hooks: dense 27.8 tok/s, act-only 43.7 (1.57x), dual 45.1 (1.62x).

Tried and rejected (same conditions):

* The bitmap kernel, made 2.5x faster than its first version (block W50% + X50%: 0.65x ->
  1.65x; W70% + X50%: 1.88x), still loses to the activation-sparse kernel reading the zeros
  (2.15x, 2.17x): per 16-row group it issues a word load, an unaligned value load (mostly a
  cache-line split), an expand and an FMA where the dense stream issues one load and one FMA,
  and with SmolLM2's layers in L2/L3 the saved bytes do not pay for that. End to end, where the
  weights stream from DRAM, it gave 1.01x against 1.30x for ``act`` (the decode, not DRAM, is its
  limit). Steps measured on the block at W50% + X50% (loaded machine, so compare within a row):
  first version 0.62x; accumulators in registers, serial popcount pointer 1.01x;
  ``vexpandloadu`` from memory instead of load + expand 1.03x; per-group offsets from scalar
  popcounts 1.24-1.54x; the kept vector popcount prefix 1.74x; precomputed per-group ``uint8``
  offsets in the format 1.04x (slower: one more byte stream per group). A masked load without
  the expand (a wrong result, to bound the expand's cost) gave 1.53-1.62x, so the expand is
  not the bottleneck; the per-group scalar work and loads are.
* A dense 16-float chunk per non-empty (channel, 16-row group): at unstructured 50% sparsity
  almost no group is empty (2^-16), so it is the dense layout.
* fp16/bf16 values: not tried for float32 layers; a float32 value needs all its bits for the
  1e-5 parity the tests ask for.
* numba (first version): ``parallel=True``, ``fastmath`` activation-sparse 266 us and
  dual-sparse 230 us against 35 us for C++ on 1536 x 576, dominated by the parallel-region
  launch and the argument unboxing, and no access to ``vexpandps``. A C++ extension adds no
  dependency (torch and g++ are already needed). The price is a one-off build (~30 s, cached
  under ``TORCH_EXTENSIONS_DIR``); a missing compiler or a failed build falls back to the torch
  reference path (:func:`backend` says ``torch-fallback``, :func:`fallback_reason` why), never a
  traceback.

With 2 threads (``--threads 0``) the figures are the same as with 1: the layers are too small
for the second core to pay (``results/decode-speed-allthreads.txt``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from solver.math.masks import prune_count

TILE_ROWS = 256
"""Output rows per tile (one parallel work item); a multiple of :data:`GROUP_ROWS`."""

GROUP_ROWS = 16
"""Output rows per bitmap word (one AVX-512 register of float32)."""

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512VPOPCNTDQ__)
#define DUOGPT_AVX512 1
#include <immintrin.h>
#endif

static constexpr int64_t TILE = 256;
static constexpr int64_t GROUP = 16;
static constexpr int64_t PF = 4;  // channels ahead that act_tile prefetches

static std::vector<int32_t> active_channels(const float* x, int64_t k) {
  std::vector<int32_t> act;
  act.reserve(k);
  for (int64_t j = 0; j < k; ++j)
    if (x[j] != 0.f) act.push_back(static_cast<int32_t>(j));
  return act;
}

#if defined(DUOGPT_AVX512)
// Lanes of group g (16 rows) that hold output rows of a tile of `rows` rows.
static inline __mmask16 rows_mask(int64_t rows, int g) {
  const int64_t left = rows - static_cast<int64_t>(g) * GROUP;
  return left >= GROUP ? static_cast<__mmask16>(0xFFFF)
                       : static_cast<__mmask16>((1u << left) - 1u);
}

// One tile of NG groups (16 NG output rows): the accumulators stay in NG zmm registers over
// every active channel; each channel adds x_j times its contiguous W^T segment.
template <int NG>
static void act_tile(const float* w, int64_t n, const float* xp, const int32_t* act, int64_t m,
                     float* out, int64_t rows) {
  __m512 acc[NG];
#pragma GCC unroll 16
  for (int g = 0; g < NG; ++g) acc[g] = _mm512_setzero_ps();
  const __mmask16 last = rows_mask(rows, NG - 1);
  for (int64_t a = 0; a < m; ++a) {
    const int64_t j = act[a];
    const __m512 xv = _mm512_set1_ps(xp[j]);
    const float* col = w + j * n;
    if (a + PF < m) {
      const char* next = reinterpret_cast<const char*>(w + static_cast<int64_t>(act[a + PF]) * n);
#pragma GCC unroll 16
      for (int g = 0; g < NG; ++g) _mm_prefetch(next + g * 64, _MM_HINT_T0);
    }
#pragma GCC unroll 16
    for (int g = 0; g < NG; ++g) {
      const __m512 wv = g == NG - 1 ? _mm512_maskz_loadu_ps(last, col + g * GROUP)
                                    : _mm512_loadu_ps(col + g * GROUP);
      acc[g] = _mm512_fmadd_ps(xv, wv, acc[g]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < NG; ++g) _mm512_mask_storeu_ps(out + g * GROUP, rows_mask(rows, g), acc[g]);
}

// The same tile from the bitmap format: per channel, the tile's NG words are loaded at once,
// their popcounts (vpopcntd) prefix-summed in a register give every group's start in the packed
// values (no serial pointer chain), and each group is one unaligned load, one vexpandps with the
// word as mask (read straight from memory) and one FMA.
template <int NG>
static void dual_tile(const uint16_t* mk, int64_t G, const float* vals, const int64_t* off_t,
                      const float* xp, const int32_t* act, int64_t m, float* out, int64_t rows,
                      int64_t g0) {
  __m512 acc[NG];
#pragma GCC unroll 16
  for (int g = 0; g < NG; ++g) acc[g] = _mm512_setzero_ps();
  const __mmask16 words_mask = static_cast<__mmask16>((1u << NG) - 1u);
  const __m512i zero = _mm512_setzero_si512();
  alignas(64) int32_t ends[16];
  for (int64_t a = 0; a < m; ++a) {
    const int64_t j = act[a];
    const __m512 xv = _mm512_set1_ps(xp[j]);
    const float* v = vals + off_t[j];
    const uint16_t* words = mk + j * G + g0;
    __m512i c = _mm512_popcnt_epi32(
        _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(words_mask, words)));
    c = _mm512_add_epi32(c, _mm512_alignr_epi32(c, zero, 15));
    c = _mm512_add_epi32(c, _mm512_alignr_epi32(c, zero, 14));
    c = _mm512_add_epi32(c, _mm512_alignr_epi32(c, zero, 12));
    c = _mm512_add_epi32(c, _mm512_alignr_epi32(c, zero, 8));
    _mm512_store_si512(ends, c);  // ends[g]: values of groups 0..g (inclusive prefix)
#pragma GCC unroll 16
    for (int g = 0; g < NG; ++g) {
      __mmask16* word_at = reinterpret_cast<__mmask16*>(const_cast<uint16_t*>(words + g));
      const __mmask16 word = _load_mask16(word_at);
      const __m512 wv = _mm512_maskz_expand_ps(word, _mm512_loadu_ps(v + (g ? ends[g - 1] : 0)));
      acc[g] = _mm512_fmadd_ps(xv, wv, acc[g]);
    }
  }
#pragma GCC unroll 16
  for (int g = 0; g < NG; ++g) _mm512_mask_storeu_ps(out + g * GROUP, rows_mask(rows, g), acc[g]);
}

#define DUOGPT_CASES(CALL) \
  switch (ng) {            \
    CALL(1) CALL(2) CALL(3) CALL(4) CALL(5) CALL(6) CALL(7) CALL(8) \
    CALL(9) CALL(10) CALL(11) CALL(12) CALL(13) CALL(14) CALL(15) CALL(16) \
  }
#endif

// The active channels of x after top-k activation sparsity (drop the `drop` smallest |x_j|), in
// ascending order, into `act`. The kept set equals torch.topk's on |x| whenever it is unique:
// the magnitudes are compared as the bits of |x| (monotone for non-NaN floats, +0 = -0), a
// partial sort finds the (drop+1)-th smallest `b` and the largest `a` below it, and channel j is
// active when |x_j| > a. Ties at a = b > 0 (the kept set would depend on how topk breaks them)
// and NaN return false: the caller then takes the reference path. A tie at 0 is harmless: every
// entry dropped or kept there is zero already.
static inline uint32_t magnitude_bits(const float* xp, int64_t j) {
  uint32_t bits;
  std::memcpy(&bits, xp + j, sizeof(bits));
  return bits & 0x7FFFFFFFu;
}

static bool topk_active(const float* xp, int64_t k, int64_t drop, std::vector<uint32_t>& key,
                        std::vector<int32_t>& act) {
  act.clear();
  if (drop <= 0) {
    for (int64_t j = 0; j < k; ++j)
      if (xp[j] != 0.f) act.push_back(static_cast<int32_t>(j));
    return true;
  }
  key.resize(k);
  uint32_t top = 0;
  for (int64_t j = 0; j < k; ++j) {
    key[j] = magnitude_bits(xp, j);
    top = std::max(top, key[j]);
  }
  if (top > 0x7F800000u) return false;  // NaN
  if (drop >= k) return true;           // everything dropped
  std::nth_element(key.begin(), key.begin() + drop, key.end());
  const uint32_t b = key[drop];
  const uint32_t a = *std::max_element(key.begin(), key.begin() + drop);
  if (a == b && a != 0u) return false;
  act.reserve(k - drop);
  for (int64_t j = 0; j < k; ++j)
    if (magnitude_bits(xp, j) > a) act.push_back(static_cast<int32_t>(j));
  return true;
}

// y (n) = sum over active j of x_j * wt[j, :], wt: (k, n) channel-major.
static torch::Tensor act_gemv_on(const torch::Tensor& wt, const torch::Tensor& x,
                                 const std::vector<int32_t>& act) {
  const int64_t n = wt.size(1);
  auto y = torch::empty({n}, x.options());
  const float* w = wt.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t m = static_cast<int64_t>(act.size());
  const int64_t tiles = (n + TILE - 1) / TILE;
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * TILE, rows = std::min(TILE, n - r0);
#if defined(DUOGPT_AVX512)
      const int ng = static_cast<int>((rows + GROUP - 1) / GROUP);
#define DUOGPT_ACT(N) case N: act_tile<N>(w + r0, n, xp, act.data(), m, yp + r0, rows); break;
      DUOGPT_CASES(DUOGPT_ACT)
#undef DUOGPT_ACT
#else
      float acc[TILE];
      std::memset(acc, 0, sizeof(acc));
      for (int64_t a = 0; a < m; ++a) {
        const float xj = xp[act[a]];
        const float* col = w + static_cast<int64_t>(act[a]) * n + r0;
        for (int64_t r = 0; r < rows; ++r) acc[r] += xj * col[r];
      }
      std::memcpy(yp + r0, acc, rows * sizeof(float));
#endif
    }
  });
  return y;
}

torch::Tensor act_gemv(const torch::Tensor& wt, const torch::Tensor& x) {
  return act_gemv_on(wt, x, active_channels(x.data_ptr<float>(), wt.size(0)));
}

// masks (k, G) 16-bit words, bit b of word g = row 16 g + b is non-zero; values packed per
// column in row order (padded by 16 at the end); offsets (tiles, k): the index in values of
// column j's first non-zero at or below the tile's first row.
static torch::Tensor dual_gemv_on(const torch::Tensor& masks, const torch::Tensor& values,
                                  const torch::Tensor& offsets, const torch::Tensor& x,
                                  int64_t n, const std::vector<int32_t>& act) {
  const int64_t k = masks.size(0), G = masks.size(1);
  auto y = torch::empty({n}, x.options());
  const uint16_t* mk = reinterpret_cast<const uint16_t*>(masks.data_ptr<int16_t>());
  const float* vals = values.data_ptr<float>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t m = static_cast<int64_t>(act.size());
  const int64_t tiles = offsets.size(0);
  at::parallel_for(0, tiles, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * TILE, rows = std::min(TILE, n - r0);
      const int64_t g0 = r0 / GROUP, g1 = std::min(G, g0 + TILE / GROUP);
#if defined(DUOGPT_AVX512)
      const int ng = static_cast<int>(g1 - g0);
#define DUOGPT_DUAL(N) \
  case N: dual_tile<N>(mk, G, vals, off + t * k, xp, act.data(), m, yp + r0, rows, g0); break;
      DUOGPT_CASES(DUOGPT_DUAL)
#undef DUOGPT_DUAL
#else
      float acc[TILE];
      std::memset(acc, 0, sizeof(acc));
      for (int64_t a = 0; a < m; ++a) {
        const int64_t j = act[a];
        const float xj = xp[j];
        const float* v = vals + off[t * k + j];
        const uint16_t* words = mk + j * G;
        for (int64_t g = g0; g < g1; ++g) {
          uint32_t word = words[g];
          float* out = acc + (g - g0) * GROUP;
          while (word) {
            out[__builtin_ctz(word)] += xj * *v++;
            word &= word - 1;
          }
        }
      }
      std::memcpy(yp + r0, acc, rows * sizeof(float));
#endif
    }
  });
  return y;
}

torch::Tensor dual_gemv(const torch::Tensor& masks, const torch::Tensor& values,
                        const torch::Tensor& offsets, const torch::Tensor& x, int64_t n) {
  return dual_gemv_on(masks, values, offsets, x, n,
                      active_channels(x.data_ptr<float>(), masks.size(0)));
}

// The fused decode paths: top-k of x (topk_active), then the kernel on the kept channels. x is
// one token, float32 and contiguous, of any leading shape ((k), (1, 1, k), ...); y has x's
// shape with n for k. An undefined tensor (None in Python) when the top-k set is ambiguous or
// x holds NaN.
static std::vector<int64_t> out_sizes(const torch::Tensor& x, int64_t k, int64_t n) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.is_contiguous() && x.numel() == k,
              "expected one contiguous float32 token of ", k, " inputs");
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = n;
  return sizes;
}

torch::Tensor act_gemv_topk(const torch::Tensor& wt, const torch::Tensor& x, int64_t drop) {
  const std::vector<int64_t> sizes = out_sizes(x, wt.size(0), wt.size(1));
  thread_local std::vector<uint32_t> key;
  std::vector<int32_t> act;
  if (!topk_active(x.data_ptr<float>(), wt.size(0), drop, key, act)) return torch::Tensor();
  return act_gemv_on(wt, x, act).view(sizes);
}

torch::Tensor dual_gemv_topk(const torch::Tensor& masks, const torch::Tensor& values,
                             const torch::Tensor& offsets, const torch::Tensor& x, int64_t n,
                             int64_t drop) {
  const std::vector<int64_t> sizes = out_sizes(x, masks.size(0), n);
  thread_local std::vector<uint32_t> key;
  std::vector<int32_t> act;
  if (!topk_active(x.data_ptr<float>(), masks.size(0), drop, key, act)) return torch::Tensor();
  return dual_gemv_on(masks, values, offsets, x, n, act).view(sizes);
}

// The kept channels of topk_active as an int64 tensor (ascending), or None: for the tests.
torch::Tensor topk_channels(const torch::Tensor& x, int64_t drop) {
  std::vector<uint32_t> key;
  std::vector<int32_t> act;
  if (!topk_active(x.data_ptr<float>(), x.numel(), drop, key, act)) return torch::Tensor();
  auto out = torch::empty({static_cast<int64_t>(act.size())}, torch::kInt64);
  int64_t* op = out.data_ptr<int64_t>();
  for (size_t i = 0; i < act.size(); ++i) op[i] = act[i];
  return out;
}

bool has_avx512() {
#if defined(DUOGPT_AVX512)
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("act_gemv", &act_gemv, "activation-sparse GEMV");
  m.def("dual_gemv", &dual_gemv, "dual-sparse GEMV");
  m.def("act_gemv_topk", &act_gemv_topk, "top-k of x, then the activation-sparse GEMV");
  m.def("dual_gemv_topk", &dual_gemv_topk, "top-k of x, then the dual-sparse GEMV");
  m.def("topk_channels", &topk_channels, "the channels that top-k keeps (None: ambiguous)");
  m.def("has_avx512", &has_avx512, "whether the AVX-512 paths were compiled");
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


def _build(cflags: list[str] | None = None) -> tuple[Any | None, str | None]:
    """Compile the kernels with ``cflags`` (default :data:`_CFLAGS`): the module, or None and
    why not. The tests build once more with ``-mno-avx512f`` to check the portable loops."""
    if os.environ.get("DUOGPT_KERNELS") == "torch":
        return None, "DUOGPT_KERNELS=torch asks for the torch reference path"
    flags = list(_CFLAGS if cflags is None else cflags)
    digest = hashlib.sha1((_SOURCE + " ".join(flags)).encode()).hexdigest()[:10]
    try:
        from torch.utils.cpp_extension import load_inline

        module = load_inline(  # type: ignore[no-untyped-call]
            name=f"duogpt_gemv_{digest}",
            cpp_sources=[_SOURCE],
            extra_cflags=flags,
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
        dense_t: ``W^T`` with its zeros (``k x n`` float32) when :func:`pack_dual` found the
            activation-sparse kernel faster than the bitmap one for this layer
            (:func:`choose_kernel`): :func:`dual_gemv` then runs :func:`act_gemv` on it. None:
            the bitmap kernel runs. Both sum the same products in the same order, so the
            result does not depend on the choice.
    """

    masks: Tensor
    values: Tensor
    offsets: Tensor
    rows: int
    dense_t: Tensor | None = None

    @property
    def kernel(self) -> str:
        """``bitmap`` or ``act``: the kernel that :func:`dual_gemv` runs for this weight."""
        return "bitmap" if self.dense_t is None else "act"

    def nbytes(self) -> int:
        """Bytes of the stored weight (bitmaps + values, offsets excluded as in speedup.py)."""
        nnz = self.values.numel() - GROUP_ROWS
        return self.masks.numel() * 2 + nnz * self.values.element_size()


KERNELS = ("auto", "bitmap", "act")
"""What :func:`pack_dual` stores for the CPU dual-sparse product: ``bitmap`` the bitmap format
only; ``act`` also ``W^T`` with its zeros, for the activation-sparse kernel; ``auto`` whichever
of the two :func:`choose_kernel` times faster for the layer's shape and density.
``DUOGPT_DUAL_KERNEL`` overrides the ``auto`` default."""


def pack_dual(weight: Tensor, *, kernel: str | None = None) -> DualWeight:
    """The dual-sparse storage of a float ``n x k`` weight (zeros are the pruned entries).

    ``kernel``: one of :data:`KERNELS`; by default ``DUOGPT_DUAL_KERNEL`` or ``auto``. Without
    the compiled kernels the choice is moot (the torch reference runs) and ``bitmap`` is kept.
    """
    kernel = kernel or os.environ.get("DUOGPT_DUAL_KERNEL") or "auto"
    if kernel not in KERNELS:
        raise ValueError(f"unknown dual kernel {kernel!r}: use one of {', '.join(KERNELS)}")
    packed = _pack_bitmap(weight)
    if kernel == "bitmap" or _extension() is None:
        return packed
    dense_t = unpack_dual(packed).t().contiguous()
    if kernel == "auto" and choose_kernel(packed, dense_t) == "bitmap":
        return packed
    return replace(packed, dense_t=dense_t)


_choices: dict[tuple[int, int, int, int], str] = {}


def choose_kernel(packed: DualWeight, dense_t: Tensor) -> str:
    """``bitmap`` or ``act``: the faster CPU kernel for this layer, timed once per shape,
    density (to 5%) and thread count, and remembered for the process.

    Both kernels visit only the active channels, so the ratio of their times barely depends
    on the input's density; the probe times them on a 50%-sparse seeded input, interleaved,
    and keeps the best of 5 rounds of each (a few ms per new key).
    """
    ext = _extension()
    if ext is None:
        return "bitmap"
    k, n = dense_t.shape
    nnz = packed.values.numel() - GROUP_ROWS
    density = nnz / max(1, n * k)
    key = (n, k, round(density * 20), torch.get_num_threads())
    if key not in _choices:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(k, generator=gen) * (torch.rand(k, generator=gen) < 0.5)
        runs: dict[str, Callable[[], Tensor]] = {
            "bitmap": lambda: ext.dual_gemv(
                packed.masks, packed.values, packed.offsets, x, packed.rows
            ),
            "act": lambda: ext.act_gemv(dense_t, x),
        }
        best = dict.fromkeys(runs, float("inf"))
        for fn in runs.values():
            fn()  # warm-up
        reps = max(1, int(8e6 // max(1, n * k)))  # ~0.2 ms per round per kernel
        for _ in range(5):
            for name, fn in runs.items():
                start = time.perf_counter()
                for _ in range(reps):
                    fn()
                best[name] = min(best[name], (time.perf_counter() - start) / reps)
        _choices[key] = "bitmap" if best["bitmap"] < best["act"] else "act"
    return _choices[key]


def _pack_bitmap(weight: Tensor) -> DualWeight:
    """The bitmap format of :class:`DualWeight` (without ``dense_t``)."""
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
    if packed.dense_t is not None:
        act: Tensor = ext.act_gemv(packed.dense_t, x)
        return act
    out: Tensor = ext.dual_gemv(packed.masks, packed.values, packed.offsets, x, packed.rows)
    return out


def topk_drop(k: int, sparsity: float) -> int:
    """How many of ``k`` inputs top-k sparsity zeroes per token (as ``topk_sparsify`` does)."""
    return prune_count(k, sparsity)


def act_gemv_topk(weight_t: Tensor, x: Tensor, drop: int) -> Tensor | None:
    """:func:`act_gemv` of ``x`` after zeroing its ``drop`` smallest ``|x_j|``, in one call.

    The same result, bit for bit, as ``act_gemv(weight_t, topk_sparsify(x, drop / k))``
    whenever the kept set is unique. None (nothing computed) when it is not: two equal non-zero
    magnitudes straddle the cut, so the kept set would depend on how ``torch.topk`` breaks the
    tie; or ``x`` holds a NaN; or the compiled kernels are missing. The caller then takes the
    reference path (``topk_sparsify``, then the kernel).
    """
    ext = _extension()
    if ext is None:
        return None
    out: Tensor | None = ext.act_gemv_topk(weight_t, x, drop)
    return out


def dual_gemv_topk(packed: DualWeight, x: Tensor, drop: int) -> Tensor | None:
    """:func:`dual_gemv` of ``x`` after its top-k, in one call (None as in
    :func:`act_gemv_topk`)."""
    ext = _extension()
    if ext is None:
        return None
    out: Tensor | None
    if packed.dense_t is not None:
        out = ext.act_gemv_topk(packed.dense_t, x, drop)
    else:
        out = ext.dual_gemv_topk(packed.masks, packed.values, packed.offsets, x, packed.rows, drop)
    return out


def topk_gemv(weight: Tensor | DualWeight, drop: int) -> Callable[[Tensor], Tensor | None] | None:
    """The fused decode product bound to one layer: ``x -> act_gemv_topk(weight, x, drop)``
    (or :func:`dual_gemv_topk` for a :class:`DualWeight`), straight into the compiled kernel;
    None without the build.

    ``x`` is one float32 contiguous token of any leading shape; the result has that shape with
    ``n`` for ``k`` (None where the kernel declines). Binding the storage once and shaping in
    C++ saves ~4 us of Python and dispatch per call (``reshape``, ``to``, ``contiguous`` and
    the wrapper: 7.2 -> ~3.5 us for a 192 x 576 layer), ~0.8 ms of a token at 210 layers.
    """
    ext = _extension()
    if ext is None:
        return None
    if isinstance(weight, DualWeight):
        if weight.dense_t is None:
            dual = ext.dual_gemv_topk
            masks, values, offsets, rows = weight.masks, weight.values, weight.offsets, weight.rows
            return lambda x: dual(masks, values, offsets, x, rows, drop)
        weight = weight.dense_t
    act = ext.act_gemv_topk
    weight_t = weight
    return lambda x: act(weight_t, x, drop)


def topk_channels(x: Tensor, drop: int) -> Tensor | None:
    """The channels (ascending, int64) that the fused kernels keep when they zero the ``drop``
    smallest ``|x_j|`` of the float32 vector ``x``; None where they would decline (see
    :func:`act_gemv_topk`). For the tests."""
    ext = _extension()
    if ext is None:
        return None
    out: Tensor | None = ext.topk_channels(x, drop)
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
