"""Run a list of configurations (JSON objects, one per line of a file) through the result cache.

A small helper for exploratory runs: each line is a RunConfig overlay on the second-model
protocol of :mod:`benchmarks.second_model` (or on the default protocol with ``"base": "smollm2"``);
``"calib": "jargon"`` calibrates on the first half of the evaluated Jargon File. Finished runs
land in ``--cache`` and are not run again.

    .venv/bin/python benchmarks/run_queue.py runs.jsonl \
        --cache results/second_model-experiments.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, second_model


def main() -> None:
    """Parse the options, run every configuration, print one line each."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="file with one JSON overlay per line")
    args = parser.parse_args()
    common.protocol(False, args.threads)
    runs = []
    for line in args.runs.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        overlay = json.loads(line)
        base = common.FULL if overlay.pop("base", "qwen") == "smollm2" else second_model.QWEN
        config = {**base, "eval_dense": False, **overlay}
        if config.get("calib") == "jargon":  # the second model's text, wherever it was fetched
            config["calib"] = str(second_model.TEXT)
        runs.append((json.dumps(overlay, sort_keys=True), config))
    results = common.run_from_args(runs, args)
    for label, _config, summary in results:
        print(f"{common.fmt(summary.get('ppl_pruned'))}\t{label}")


if __name__ == "__main__":
    main()
