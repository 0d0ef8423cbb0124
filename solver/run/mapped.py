"""The decoder blocks' weights in memory-mapped files (``--offload disk``, issue 14).

:class:`BlockFiles` writes each block's parameters and buffers into its own file in a scratch
folder (``torch.save``), loads it back memory-mapped (``torch.load(mmap=True)``, a private
mapping: writes never reach the file) and points the block's tensors at the mapped copies, so
the copy that loading made is released and the kernel pages the weights in from the file as
they are read (and may drop them again when memory is short). A block whose weights changed
(pruned, or restored from a checkpoint) is written to a fresh file, never into one that is
mapped, and mapped again; a block that only visited the device is pointed back at the mapping
it had. :mod:`solver.run.offload` decides when.

Parameters keep their identity (``param.data`` is repointed), so tensors tied inside a block
stay tied. Nothing outside the blocks is touched here
(:meth:`~solver.run.offload.Placement.attach` copies those modules' tensors).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

HOST = torch.device("cpu")
"""Where the mapped tensors live."""


@dataclass(frozen=True)
class _Slot:
    """Where one tensor of a block lives: ``module.<name>``, a parameter or a buffer."""

    module: nn.Module
    name: str
    parameter: bool
    tensor: torch.Tensor


def _slots(block: nn.Module) -> list[_Slot]:
    """Every parameter and buffer slot of ``block`` (a shared module or tensor: every slot)."""
    slots = []
    for _, module in block.named_modules(remove_duplicate=False):
        for name, param in module.named_parameters(recurse=False):
            slots.append(_Slot(module, name, True, param))
        for name, buffer in module.named_buffers(recurse=False):
            slots.append(_Slot(module, name, False, buffer))
    return slots


def _keys(slots: Iterable[_Slot]) -> list[str]:
    """A file key per slot: ``t0``, ``t1``... by first appearance, shared by the slots that
    hold the same tensor (a tie), so that the file holds it once and the tie survives."""
    keys: dict[int, str] = {}
    return [keys.setdefault(id(slot.tensor), f"t{len(keys)}") for slot in slots]


def _point(slots: Iterable[_Slot], keys: Iterable[str], mapped: dict[str, torch.Tensor]) -> None:
    """Point each slot at the mapped tensor of its key (parameters keep their identity)."""
    with torch.no_grad():
        for slot, key in zip(slots, keys, strict=True):
            if slot.parameter:
                slot.tensor.data = mapped[key]
            else:
                setattr(slot.module, slot.name, mapped[key])


class BlockFiles:
    """The blocks' weights, one memory-mapped file per block, in a scratch folder.

    Args:
        folder: the scratch folder (emptied first: a killed run may have left one); ``None``
            makes a temporary folder. :meth:`close` removes it either way.
    """

    def __init__(self, folder: Path | None = None) -> None:
        """Make the scratch folder (see the class text)."""
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if folder is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="duogpt-offload-")
            folder = Path(self._temporary.name)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        self.folder = folder
        self._index: dict[int, int] = {}  # id(block) -> its index, for the file names
        self._mapped: dict[int, dict[str, torch.Tensor]] = {}  # id(block) -> its mapped tensors
        self._keys: dict[int, list[str]] = {}  # id(block) -> the file key of each slot
        self._files: dict[int, Path] = {}  # id(block) -> its current file
        self._writes = 0

    def map(self, block: nn.Module, index: int | None = None) -> None:
        """Write ``block``'s tensors to a fresh file, map it and point the block at the mapping.

        The tensors may be on any device (a block on the device comes to host memory to be
        written, then is freed). A tensor that is a view into a larger storage is written
        alone, not with the whole storage. The block's previous file, if any, is deleted (its
        mapping lives until the last tensor that reads it is gone).

        Args:
            block: the block.
            index: its index in the model, for the file's name (default: the one it had).
        """
        if index is not None:
            self._index[id(block)] = index
        slots = _slots(block)
        keys = _keys(slots)
        state = {key: _alone(slot.tensor) for slot, key in zip(slots, keys, strict=True)}
        self._writes += 1
        path = self.folder / f"block-{self._index.get(id(block), 0):04d}-{self._writes}.pt"
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, path)
        del state
        mapped = torch.load(path, map_location=HOST, mmap=True, weights_only=True)
        _point(slots, keys, mapped)
        self._mapped[id(block)] = mapped
        self._keys[id(block)] = keys
        previous = self._files.get(id(block))
        self._files[id(block)] = path
        if previous is not None:
            _unlink(previous)

    def map_all(self, blocks: Iterable[nn.Module]) -> None:
        """:meth:`map` every block, in order (their indexes name the files)."""
        for index, block in enumerate(blocks):
            self.map(block, index)

    def restore(self, block: nn.Module) -> None:
        """Point a block whose weights did not change (it only visited the device) back at its
        mapping: no copy comes back to host memory. Its slots are matched by position, as
        :meth:`map` found them."""
        _point(_slots(block), self._keys[id(block)], self._mapped[id(block)])

    def files(self) -> list[Path]:
        """The blocks' current files, in block order."""
        return [self._files[i] for i in sorted(self._files, key=lambda i: self._index.get(i, 0))]

    def close(self) -> None:
        """Forget the mappings and remove the folder (tensors still mapped stay readable)."""
        self._mapped.clear()
        self._keys.clear()
        self._files.clear()
        if self._temporary is not None:
            self._temporary.cleanup()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)


def _alone(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in host memory as it is written: detached, and a copy of its own when it is a
    view into a larger storage (``torch.save`` writes a tensor's whole storage)."""
    tensor = tensor.detach().to(HOST)
    if tensor.untyped_storage().nbytes() > tensor.numel() * tensor.element_size():
        return tensor.clone()
    return tensor


def _unlink(path: Path) -> None:
    """Delete a block's old file (on a system that refuses while it is mapped, the folder's
    removal at the end takes it)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
