"""Measured batch-1 GEMV speed against the byte bound on the default model's layer shapes (#13).

SmolLM2-135M's decoder block has seven linear layers of five shapes (n x k): q and o 576x576,
k and v 192x576, gate and up 1536x576, down 576x1536. For W in {0, 50, 60, 70}% (magnitude
pruning of seeded random weights) and X in {0, 25, 50}% (per-token top-k of a seeded random
input), each shape is timed in the four modes of ``solver.kernels`` (dense torch, activation-
only, weight-only, dual-sparse); the block row weights each shape by its count. The bound is
``solver/math/speedup.py``'s bytes ratio for the values' dtype (float32 on the CPU, float16 with
``--device cuda``, where the Triton kernels run). Figures, not a timed test: the machine may be
shared with other jobs, so read them with its load (printed first).

    .venv/bin/python benchmarks/decode_speed.py --threads 1
    .venv/bin/python benchmarks/decode_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from solver.kernels.speed import CUDA_DTYPE, backend_for, time_modes
from solver.math import speedup
from solver.math.activations import topk_sparsify
from solver.math.masks import prune_count

BLOCK = {(576, 576): 2, (192, 576): 2, (1536, 576): 2, (576, 1536): 1}
MODES = ("dense", "act", "weight", "dual")


def magnitude_pruned(n: int, k: int, sparsity: float, seed: int) -> torch.Tensor:
    """A seeded random ``n x k`` weight with its smallest ``sparsity`` fraction zeroed."""
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    drop = prune_count(weight.numel(), sparsity)
    if drop:
        cut = weight.abs().reshape(-1).kthvalue(drop).values
        weight = weight.masked_fill(weight.abs() <= cut, 0.0)
    return weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: all)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the Triton kernels")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else CUDA_DTYPE
    backend, notes = backend_for(device)
    print(f"backend {backend} on {device} ({dtype}), {torch.get_num_threads()} thread(s), ", end="")
    print(f"load {os.getloadavg()}", *notes)
    print("block of 7 layers: us dense | x over dense [byte bound] for act, weight, dual")
    for w_sparsity in (0.0, 0.5, 0.6, 0.7):
        for x_sparsity in (0.0, 0.25, 0.5):
            total_us = dict.fromkeys(MODES, 0.0)
            costs = []
            shapes = []
            for (n, k), count in BLOCK.items():
                weight = magnitude_pruned(n, k, w_sparsity, seed=n * k)
                x_dense = torch.randn(k, generator=torch.Generator().manual_seed(k))
                x_sparse = topk_sparsify(x_dense, x_sparsity).contiguous()
                us = time_modes(*(t.to(device, dtype) for t in (weight, x_dense, x_sparse)))
                for mode in MODES:
                    total_us[mode] += us[mode] * count
                cost = speedup.decode_costs(
                    speedup.column_nonzeros(weight),
                    n,
                    [1.0 - x_sparsity] * k,
                    weight_bytes=float(dtype.itemsize),
                    act_bytes=float(dtype.itemsize),
                )
                costs += [cost] * count
                shapes.append(f"{n}x{k} act {us['dense'] / us['act']:.2f}x")
            bound = speedup.speedups(speedup.total(costs))
            cells = " | ".join(
                f"{mode} {total_us['dense'] / total_us[mode]:.2f}x [{bound[mode]['bytes']:.2f}x]"
                for mode in MODES[1:]
            )
            print(
                f"W{w_sparsity:.0%} X{x_sparsity:.0%}: dense {total_us['dense']:.0f} us | "
                f"{cells}  ({'; '.join(shapes)})"
            )


if __name__ == "__main__":
    main()
