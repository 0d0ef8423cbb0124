"""Layer solves and the default run with and without a competing load (issue 14, threads).

A CPU solve's column loop runs many small kernels; with several torch threads each one ends at an
OpenMP barrier, and when other work keeps the cores busy a barrier can wait a whole scheduler
slice. :func:`solver.math.obc.fewer_threads` runs a small layer's whole solve (below
``SMALL_SOLVE`` weights) and a large layer's column loop (below ``SMALL_COLUMN_WORK``
elements) on one thread, and keeps every thread for the large GEMMs. This script times
layer solves with the rule on and off (both limits 0: the old behaviour), with the
machine idle and with ``--load N`` busy processes beside it, and optionally the default run
(``--default-run``: ``duogpt prune`` with its defaults, in a fresh process, idle and loaded).

    .venv/bin/python benchmarks/threads_under_load.py --threads 2 --load 2 --default-run \
        --out results/threads-under-load.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.solver_speed import random_stats
from solver.math import obc
from solver.math.stats import LayerStats

SHAPES = ((576, 576), (1536, 576), (576, 1536), (2048, 2048))


def _burn(stop: multiprocessing.synchronize.Event) -> None:
    """Keep one core busy until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


@contextmanager
def load(processes: int) -> Iterator[None]:
    """``processes`` busy processes for the duration of the block."""
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=_burn, args=(stop,)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5 if processes else 0)
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def time_solve(weight: torch.Tensor, stats: LayerStats, repeats: int) -> float:
    """Median seconds of a DuoGPT solve (alpha 0.125, row masks)."""
    times = []
    for _ in range(repeats + 1):
        tick = time.perf_counter()
        obc.prune_obc(
            weight, stats.H, G=stats.G, g=stats.g, alpha=0.125, mask_scope="row",
            residual_damping=1.0,
        )  # fmt: skip
        times.append(time.perf_counter() - tick)
    return statistics.median(times[1:])


def solve_rows(loads: list[int], repeats: int) -> list[str]:
    """One table row per shape and load: the solve with the rule off and on."""
    rows = []
    for n, k in SHAPES:
        weight = torch.randn(n, k, generator=torch.Generator().manual_seed(0))
        stats = random_stats(k)
        for procs in loads:
            with load(procs):
                timed = {}
                saved = obc.SMALL_COLUMN_WORK, obc.SMALL_SOLVE
                for label, limits in (("off", (0, 0)), ("on", saved)):
                    obc.SMALL_COLUMN_WORK, obc.SMALL_SOLVE = limits
                    try:
                        timed[label] = time_solve(weight, stats, repeats)
                    finally:
                        obc.SMALL_COLUMN_WORK, obc.SMALL_SOLVE = saved
                avg = os.getloadavg()[0]
            rows.append(
                f"| {n}x{k} | {procs} | {avg:.1f} | {timed['off'] * 1e3:.0f} | "
                f"{timed['on'] * 1e3:.0f} | {timed['off'] / timed['on']:.2f}x |"
            )
            print(rows[-1], flush=True)
    return rows


def default_run(threads: int, procs: int) -> dict[str, float]:
    """The default ``duogpt prune`` run (the product's path, a fresh process, no saved model)
    beside ``procs`` busy processes: wall, solve and statistics seconds and the perplexity."""
    from benchmarks import common

    common.set_threads(threads)
    with load(procs):
        summary = common.run_isolated({"save_model": False, "eval_dense": False})
    if summary.get("status") != "finished":
        raise SystemExit(f"the default run did not finish: {summary.get('error')}")
    timings = summary.get("timings", {})
    return {
        "wall": float(summary["wall_s"]),
        "solve": float(timings.get("solve", 0.0)),
        "ppl": float(summary["ppl_pruned"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Time the solves (and the default run), print and optionally write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--load", type=int, default=2, help="busy processes for the loaded rows")
    parser.add_argument("--repeats", type=int, default=3, help="timed solves per cell")
    parser.add_argument("--default-run", action="store_true", help="also time the default run")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.load < 0 or args.repeats < 1:
        print("error: --threads and --repeats must be >= 1, --load >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    loads = [0, args.load] if args.load else [0]
    lines = [
        "# Threads under load",
        "",
        f"torch threads {args.threads}; {os.cpu_count()} CPUs; loaded rows: {args.load} busy "
        "processes beside the solve; load average (1 min) read after each row. DuoGPT solve "
        "(alpha 0.125, row masks), random statistics of 2048 tokens (benchmarks/solver_speed.py), "
        "median of "
        f"{args.repeats} after a warm-up. `off`: every kernel on every thread; `on`: the "
        "whole solve on one thread below SMALL_SOLVE weights, the column loop below "
        "SMALL_COLUMN_WORK elements.",
        "",
        "| layer | busy processes | load | off ms | on ms | off / on |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *solve_rows(loads, args.repeats),
    ]
    if args.default_run:
        lines += [
            "",
            "## The default run (`duogpt prune` defaults; no saved model, no dense evaluations)",
            "",
            "| busy processes | wall s | solve s | perplexity |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for procs in loads:
            got = default_run(args.threads, procs)
            lines.append(f"| {procs} | {got['wall']:.0f} | {got['solve']:.1f} | {got['ppl']:.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
