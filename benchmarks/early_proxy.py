"""Proxy perplexity after each of the first blocks (issue 9): a fast look at where a run breaks.

Runs the pipeline on the second model (or the default one) with ``proxy_every = 1`` and stops
after block ``--upto``: the printed list is the perplexity on ``--windows`` evaluation windows
with blocks 0..i pruned, for each i. A jump between two blocks names the block that breaks the
model. ``--layer-override 'BLOCK|LAYER|JSON'`` solves one layer with other settings (e.g.
``'2|mlp.down_proj|{"alpha": 0}'``) to find which layer of that block is responsible.

    .venv/bin/python benchmarks/early_proxy.py --upto 2 --threads 1 '{"method": "wanda"}' \
        '{"method": "duogpt", "mask_scope": "block", "token_clip": 0}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, second_model


@contextmanager
def layer_overrides(specs: list[str]) -> Iterator[None]:
    """Patch the driver so that the named layers are solved with other config fields."""
    from solver.run import layers

    targets = [spec.split("|", 2) for spec in specs]
    original = layers.solve_layer

    def solve_layer(run: Any, index: int, name: str, *args: Any, **kwargs: Any) -> Any:
        for block, layer, patch in targets:
            if int(block) == index and layer in (name, "*"):
                saved = run.config
                run.config = saved.replace(**json.loads(patch))
                try:
                    return original(run, index, name, *args, **kwargs)
                finally:
                    run.config = saved
        return original(run, index, name, *args, **kwargs)

    layers.solve_layer = solve_layer
    try:
        yield
    finally:
        layers.solve_layer = original


def proxies(config: dict[str, Any], upto: int) -> list[float]:
    """The proxy perplexities after blocks 0..upto of one configuration."""
    from duogpt_tui.runner import stream
    from solver import events as ev
    from solver.config import RunConfig

    found: list[float] = []
    for event in stream(RunConfig.from_dict(config)):
        if isinstance(event, ev.PerplexityMeasured) and event.label == "proxy":
            found.append(round(event.ppl, 2))
            if event.block >= upto:
                break
        elif isinstance(event, (ev.Failed, ev.Cancelled)):
            why = event.error if isinstance(event, ev.Failed) else event.reason
            raise SystemExit(f"error: the run ended early: {why}")
    return found


def main() -> None:
    """Parse the options, run each overlay, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overlays", nargs="+", help="JSON objects of RunConfig fields")
    parser.add_argument("--upto", type=int, default=2, help="last block to measure after")
    parser.add_argument("--windows", type=int, default=8, help="proxy evaluation windows")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smollm2", action="store_true", help="the default model instead")
    parser.add_argument("--layer-override", action="append", default=[], metavar="B|LAYER|JSON")
    args = parser.parse_args()
    common.set_threads(args.threads)
    base = common.FULL if args.smollm2 else second_model.QWEN
    with layer_overrides(args.layer_override):
        for text in args.overlays:
            overlay = json.loads(text)
            config = {
                **base,
                **common.NO_FILES,
                "eval_dense": False,
                "eval_windows": args.windows,
                "proxy_every": 1,
                "proxy_windows": args.windows,
                **overlay,
            }
            tick = time.monotonic()
            found = proxies(config, args.upto)
            print(f"{json.dumps(overlay)}: {found} ({time.monotonic() - tick:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
