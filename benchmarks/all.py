"""Every full-size benchmark run of issue 4 in one pool, then the three tables.

The method table, the sweep and the ablations share configurations (the default DuoGPT run is in
all three). This script collects the distinct configurations of the three, runs them ``--jobs``
at a time with the result cache (``--cache``, default ``results/runs.jsonl``), and then writes
``results/methods.md``, ``results/sweep.md`` and ``results/ablations.md`` by running each script
against the filled cache. An interrupted run picks up where it stopped.

    .venv/bin/python benchmarks/all.py --jobs 2 --threads 1
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import ablations, common, methods, sweep

SCRIPTS = ("methods", "sweep", "ablations")


def configurations(
    base: dict[str, Any], calib_alphas: list[float], seeds: list[int] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The distinct ``(label, config)`` of the three scripts, the reference run first (each
    once per seed of ``seeds``, default the protocol's seed)."""
    seeds = seeds or [int(base["seed"])]
    runs = [("reference (dense figures)", common.reference_config(base))]
    runs += [
        (f"methods {s} {m} seed {c['seed']}", c) for s, m, c in methods.configurations(base, seeds)
    ]
    grid = sweep.configurations(base, ["duogpt", "sparsegpt"], seeds=seeds)
    runs += [(f"sweep {label}", c) for label, c in grid]
    rows = ablations.configurations(base, ablations.ALL_GROUPS, ablations.CALIB, calib_alphas)
    runs += [
        (f"ablation {label} seed {seed}", c)
        for _, label, config in rows
        for seed, c in common.seeded(config, seeds)
    ]
    seen: set[str] = set()
    distinct = []
    for label, config in runs:
        key = common.config_key(config)
        if key not in seen:
            seen.add(key)
            distinct.append((label, config))
    return distinct


def main() -> None:
    """Run every distinct configuration, then write each script's table from the cache."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument("--calib-alphas", default="0.125", help="alphas of the calibration grid")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    args = parser.parse_args()
    if args.quick:
        parser.error("--quick: run each script with --quick (make bench-quick)")
    cache_path = args.cache or common.ROOT / "results" / "runs.jsonl"
    base = common.protocol(False, args.threads)
    alphas = [float(a) for a in args.calib_alphas.split(",") if a.strip()]
    seeds = common.seeds_of(args, base)
    runs = configurations(base, alphas, seeds)
    cache = common.ResultCache(cache_path)
    if args.list:
        for label, config in runs:
            print(("cached  " if cache.get(config) else "to run  ") + label)
        return
    tick = time.monotonic()
    common.run_all(runs, jobs=args.jobs, cache=cache)
    print(f"all runs done in {time.monotonic() - tick:.0f} s", file=sys.stderr)
    for name in SCRIPTS:
        shown = os.path.relpath(cache_path, common.ROOT)
        command = [sys.executable, f"benchmarks/{name}.py", "--cache", shown]
        command += ["--jobs", str(args.jobs), "--out", f"results/{name}.md"]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if len(seeds) > 1:
            command += ["--seeds", *map(str, seeds)]
        if name == "ablations":
            command += ["--calib-alphas", args.calib_alphas]
        subprocess.run(command, cwd=common.ROOT, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
