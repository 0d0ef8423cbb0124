"""Per-block checkpoints of a pruning run, so that a long run can be resumed.

After each pruned block the driver saves, inside the run directory's ``checkpoints/`` folder:

* ``block-NNNN.pt`` — the pruned weights of that block's prunable layers;
* ``streams.pt`` — the dense and compressed calibration streams after the block;
* ``state.json`` — the last complete block, the calibrated activation thresholds, the time
  spent so far; written last, so it only ever names a block whose files are complete.

Every file is written to a temporary name and renamed into place (atomic on POSIX), so a kill
at any moment leaves either the previous or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from solver.errors import InputError
from solver.io.run_files import CHECKPOINT_STATE, CHECKPOINTS_DIR

CHECKPOINT_DIR = CHECKPOINTS_DIR
"""Where a run's checkpoints go, inside its run directory."""


@dataclass
class Checkpoint:
    """What a resumed run needs (see the module docstring)."""

    block: int  # last complete block
    thresholds: dict[str, float]
    timings: dict[str, float]
    elapsed: float  # seconds of the run before the interruption
    dense: list[torch.Tensor]
    compressed: list[torch.Tensor]


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_block(
    folder: Path,
    index: int,
    linears: Mapping[str, nn.Module],
    dense: list[torch.Tensor],
    compressed: list[torch.Tensor],
    thresholds: dict[str, float],
    timings: dict[str, float],
    elapsed: float,
) -> None:
    """Checkpoint the run after block ``index`` (block weights, streams, then the state)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        name: cast(torch.Tensor, module.weight).detach().cpu().clone()
        for name, module in linears.items()
    }
    _atomic_save(weights, folder / f"block-{index:04d}.pt")
    streams = {
        "block": index,
        "dense": [s.detach().cpu() for s in dense],
        "compressed": [s.detach().cpu() for s in compressed],
    }
    _atomic_save(streams, folder / "streams.pt")
    state = {"block": index, "thresholds": thresholds, "timings": timings, "elapsed": elapsed}
    _atomic_write_text(json.dumps(state, indent=1) + "\n", folder / CHECKPOINT_STATE)


def has_checkpoint(folder: Path) -> bool:
    """True when ``folder`` holds a usable ``state.json``."""
    return (folder / CHECKPOINT_STATE).is_file()


def load(
    folder: Path, blocks: nn.ModuleList, layers: Callable[[nn.Module], Mapping[str, nn.Module]]
) -> Checkpoint:
    """Read the checkpoint and put the saved pruned weights back into ``blocks``.

    ``layers(block)`` gives a block's prunable layers by name (as :func:`save_block` saved them).

    Raises:
        InputError: there is no checkpoint, or its files do not agree with each other or with
            the model.
    """
    if not has_checkpoint(folder):
        raise InputError(
            f"no checkpoint in {folder}: the run stopped before its first block was complete "
            "(or it finished and its checkpoints were removed); start a new run"
        )
    state = json.loads((folder / CHECKPOINT_STATE).read_text())
    last = int(state["block"])
    streams = torch.load(folder / "streams.pt", map_location="cpu", weights_only=True)
    if int(streams["block"]) != last:
        raise InputError(
            f"checkpoint in {folder} is inconsistent (streams after block {streams['block']}, "
            f"state after block {last}); start a new run"
        )
    if last >= len(blocks):
        raise InputError(f"checkpoint in {folder} is for a model with more blocks; start a new run")
    with torch.no_grad():
        for index in range(last + 1):
            weights = torch.load(
                folder / f"block-{index:04d}.pt", map_location="cpu", weights_only=True
            )
            for name, module in layers(blocks[index]).items():
                target = cast(torch.Tensor, module.weight)
                target.copy_(weights[name].to(target.dtype))
    return Checkpoint(
        block=last,
        thresholds={k: float(v) for k, v in state.get("thresholds", {}).items()},
        timings={k: float(v) for k, v in state.get("timings", {}).items()},
        elapsed=float(state.get("elapsed", 0.0)),
        dense=list(streams["dense"]),
        compressed=list(streams["compressed"]),
    )


def remove(folder: Path) -> None:
    """Delete the checkpoints (after a finished run)."""
    shutil.rmtree(folder, ignore_errors=True)
