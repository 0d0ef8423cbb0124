"""Time and memory of DuoGPT on 7B, 13B and 70B models, on paper (issue 14 item 5).

No GPU has been lent to this project yet, so these are estimates, not measurements: FLOP counts
of the pipeline's parts for the LLaMA-2-7B, LLaMA-2-13B and LLaMA-2-70B shapes at the paper's
calibration (128 x 2048 tokens), turned into seconds with stated throughputs, and the memory
formulas of :mod:`solver.run.estimate` (the pre-flight's own) for ``--offload none`` and
``--offload cpu``. The formula, per decoder block, with ``T`` calibration tokens, ``h`` hidden,
``i`` MLP, ``h_kv`` key/value width, layers ``(n, k)`` and groups that share an input of
width ``k_g`` (q/k/v, o, gate/up, down):

* forward passes: ``2 F_pass T P_b`` FLOPs (``P_b`` the block's prunable weights; ``F_pass``
  full passes per token: one dense, the partial passes up to each group, one compressed) at
  the bfloat16 tensor-core rate;
* statistics: ``2 c k_g^2 T`` per group (``c`` = 3 GEMMs for DuoGPT's H, G and D; 1 for
  SparseGPT's H), float32 (TF32 off, as the solver runs);
* solve: ``(2 n k^2 + 1.5 k^3) r`` per layer (the OBC sweep and the Cholesky work; ``r`` =
  DuoGPT / SparseGPT, measured on the CPU: 1.45x for 4096x4096), float32;
* ``N`` ranks: the forward passes and statistics are split by ``N`` (the calibration is
  sharded); each group's layers are solved by different ranks at once, so a group costs its
  slowest layer when it has no more layers than ranks; the reduced sums are ``c k_g^2`` float32
  values per group over the interconnect.

The float32 rate is a stated fraction of the device's peak. The CPU measurement says what that
fraction is for this solver: a 4096x4096 DuoGPT solve (2.4e11 FLOPs) took 5.4 s on one core,
44 GFLOP/s. The cross-check is the paper's own figure: LLaMA-2-7B in 0.22 GPU-hours and
LLaMA-3-70B in 2.28 on one A100-80GB.

    .venv/bin/python benchmarks/scale_estimates.py --out results/scale-estimates.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from solver.config import RunConfig
from solver.run.estimate import offload_modes


@dataclass(frozen=True)
class Shape:
    """A LLaMA-style model's sizes."""

    name: str
    params: float
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int
    vocab: int = 32000


MODELS = (
    Shape("LLaMA-2-7B", 6.74e9, 4096, 11008, 32, 4096),
    Shape("LLaMA-2-13B", 13.0e9, 5120, 13824, 40, 5120),
    Shape("LLaMA-2-70B", 69.0e9, 8192, 28672, 80, 1024),
)

BF16_TFLOPS = 989.0
"""H200 SXM dense bfloat16 tensor-core peak (spec sheet)."""
FP32_TFLOPS = 67.0
"""H200 SXM float32 (non-tensor) peak (spec sheet)."""
FORWARD_EFFICIENCY = 0.35
"""Fraction of the bfloat16 peak the block forward passes reach (GEMMs of 16k-token batches)."""
SOLVE_EFFICIENCIES = (0.25, 0.5)
"""Fractions of the float32 peak for statistics and solves: the range the table gives."""
DUOGPT_SOLVE_RATIO = 1.45
"""DuoGPT / SparseGPT solve time on the same statistics (results/solver_speed-layers.md)."""
PASSES = 4.5
"""Full block passes per calibration token: dense 1, compressed 1, the partial passes up to
the o, gate/up and down groups about 2.5 together."""
LINK_BYTES_PER_S = 4.0e11
"""NVLink all-reduce bus bandwidth assumed between 4 H200s."""
GPU_MEMORY_GB = 141.0


def layers_of(m: Shape) -> list[tuple[str, list[tuple[int, int]]]]:
    """The block's groups: name and ``(n, k)`` of each layer."""
    h, i, kv = m.hidden, m.intermediate, m.kv_dim
    return [
        ("qkv", [(h, h), (kv, h), (kv, h)]),
        ("o", [(h, h)]),
        ("gate/up", [(i, h), (i, h)]),
        ("down", [(h, i)]),
    ]


def block_seconds(m: Shape, tokens: int, ranks: int, efficiency: float) -> dict[str, float]:
    """Seconds per block for each part, with ``ranks`` ranks."""
    groups = layers_of(m)
    prunable = sum(n * k for _, layers in groups for n, k in layers)
    forward = 2 * PASSES * tokens * prunable / (BF16_TFLOPS * 1e12 * FORWARD_EFFICIENCY)
    fp32 = FP32_TFLOPS * 1e12 * efficiency
    stats = sum(2 * 3 * layers[0][1] ** 2 * tokens for _, layers in groups) / fp32
    solve = 0.0
    link = 0.0
    for _, layers in groups:
        costs = sorted(
            ((2 * n * k * k + 1.5 * k**3) * DUOGPT_SOLVE_RATIO / fp32 for n, k in layers),
            reverse=True,
        )
        # greedy owners: the slowest layers go to different ranks
        loads = [0.0] * min(ranks, len(costs))
        for cost in costs:
            loads[loads.index(min(loads))] += cost
        solve += max(loads)
        if ranks > 1:
            k = layers[0][1]
            link += 2 * 3 * 4 * k * k / LINK_BYTES_PER_S
    return {
        "forward": forward / ranks,
        "statistics": stats / ranks,
        "solve": solve,
        "reduce": link,
    }


def memory_gb(m: Shape, ranks: int) -> tuple[float, float, float]:
    """Per-rank device peak with ``--offload none`` and ``cpu``, and host memory per rank."""
    config = RunConfig(
        nsamples=max(128 // ranks, 1),
        seqlen=2048,
        batch_size=8,
        eval_windows=0,
        dtype="bfloat16",
        offload="cpu",
    )
    none, cpu, _disk = offload_modes(
        config, int(m.params), m.hidden, m.layers, m.intermediate, m.vocab, m.kv_dim
    )
    return none.on("cuda") / 1024, cpu.on("cuda") / 1024, cpu.host / 1024


def table() -> str:
    """The Markdown table."""
    tokens = 128 * 2048
    low, high = SOLVE_EFFICIENCIES
    lines = [
        "| model | GPUs | hours (fp32 at 50% / 25% of peak) | forward / statistics / solve "
        "per block (s, 25%) | device peak, offload none | device peak, offload cpu | host "
        "memory per rank |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for m in MODELS:
        for ranks in (1, 4):
            fast = block_seconds(m, tokens, ranks, high)
            slow = block_seconds(m, tokens, ranks, low)
            hours = [sum(parts.values()) * m.layers / 3600 for parts in (fast, slow)]
            none, cpu, host = memory_gb(m, ranks)
            fits = "" if none <= GPU_MEMORY_GB else " (does not fit)"
            lines.append(
                f"| {m.name} | {ranks} | {hours[0]:.2f} / {hours[1]:.2f} | "
                f"{slow['forward']:.1f} / {slow['statistics']:.1f} / {slow['solve']:.1f} | "
                f"{none:.0f} GB{fits} | {cpu:.1f} GB | {host:.0f} GB |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--out`` write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here")
    args = parser.parse_args(argv)
    text = (
        "# DuoGPT at scale, on paper\n\n"
        f"Calibration 128 x 2048 tokens, bfloat16 weights, float32 solver; H200: "
        f"{BF16_TFLOPS:g} TFLOP/s bfloat16 at {FORWARD_EFFICIENCY:.0%} for the forward "
        f"passes, {FP32_TFLOPS:g} TFLOP/s float32 at {high_low()} for statistics and solves; "
        f"{LINK_BYTES_PER_S / 1e9:g} GB/s all-reduce between ranks. Formula: "
        "benchmarks/scale_estimates.py. Estimates, not measurements.\n\n" + table() + "\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


def high_low() -> str:
    """``50% / 25%``."""
    low, high = SOLVE_EFFICIENCIES
    return f"{high:.0%} / {low:.0%}"


if __name__ == "__main__":
    raise SystemExit(main())
