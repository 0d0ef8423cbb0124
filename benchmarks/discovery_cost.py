"""What generic discovery and block capture cost, against a whole run (issue 11, "Speed").

Issue 11 replaced the LLaMA name tables by discovery (tracing one block's forward to find its
prunable layers and the groups that share an input) and by a capture of every block's call (the
model's forward with each block replaced by a recorder, so that position embeddings and each
attention type's mask come from the model itself). This script times both on a model with the
default calibration (16 x 256 tokens of ``sotu`` in batches of 8), the median of ``--repeats``
after a warm-up, and gives them as a share of ``--run-seconds`` (a whole default run's wall time,
measured by the caller, e.g. ``benchmarks/threads_under_load.py --default-run``).

    .venv/bin/python benchmarks/discovery_cost.py --threads 2 --run-seconds 150
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from solver.io.data import calibration_batch, load_text
from solver.io.models import load_model
from solver.run.adapters import find_adapter
from solver.run.capture import capture_stack_inputs


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``work()`` over ``repeats`` calls after one warm-up."""
    work()
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        work()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Time discovery and capture; print them and their share of a run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model (default: smollm2-135m)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (default 3)")
    parser.add_argument(
        "--run-seconds", type=float, default=0.0, help="a whole run's wall time, for the share"
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.run_seconds < 0:
        print("error: --threads and --repeats must be >= 1, --run-seconds >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    model = loaded.model
    _, text = load_text("sotu")
    ids = calibration_batch(loaded.tokenizer, text, 16, 256, 0, name="sotu")
    batches = list(torch.split(ids, 8))
    discover = median_seconds(lambda: find_adapter(model), args.repeats)
    blocks = find_adapter(model).blocks(model)
    capture = median_seconds(lambda: capture_stack_inputs(model, blocks, batches), args.repeats)
    total = discover + capture
    print(f"model {args.model}, {args.threads} threads, calibration 16 x 256 in batches of 8")
    print(f"discovery (find_adapter): {discover * 1e3:.1f} ms")
    print(f"capture of every block's inputs: {capture * 1e3:.1f} ms")
    if args.run_seconds:
        share = total / args.run_seconds
        print(f"together {total:.2f} s = {share:.2%} of a {args.run_seconds:g} s run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
