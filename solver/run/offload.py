"""Block offload (``--offload``, issue 14): where a run's weights and calibration streams live.

ALGORITHM.md §6 step 2.4 and ARCHITECTURE.md "Devices": one decoder block on the accelerator at
a time, the rest elsewhere. A :class:`Placement` is the run's answer, used by the block walk
(:mod:`solver.run.blocks`), the layer statistics (:mod:`solver.run.layers`) and the evaluations
(:mod:`solver.run.measure`):

* ``none`` (the default, what runs did before offload existed): the model waits in host memory;
  each block moves to the device for its passes and solve, and the *whole model* for each
  evaluation. The two calibration streams, every block's other inputs and the cached dense
  layer inputs live on the device.
* ``cpu``: the weights stay in host memory and one decoder block at a time is on the device:
  for its passes and solve while pruning, and for its part of each forward pass of an
  evaluation (a pre-hook moves it in, a hook moves it back), while the modules outside the
  blocks (embeddings, final norm, LM head, rotary tables) are on the device for the
  evaluation. The calibration streams, the blocks' other inputs and the cached layer inputs
  stay in host memory (pinned on CUDA) and each batch moves to the device for its forward
  pass or its statistics. Every block moves back in place, so the pruned weights land in the
  host model. The capture of block 0's inputs runs in host memory, as it does with ``none``.
* ``disk``: ``cpu``, and the decoder blocks' weights live in files memory-mapped from disk
  (:class:`~solver.run.mapped.BlockFiles`, one file per block in ``<run directory>/offload/``,
  or a temporary folder when the run has none) instead of anonymous host memory. Once the
  model is loaded (and, on a resumed run, the checkpoint's pruned blocks restored) every block
  is written out and mapped (:meth:`Placement.attach`); a pruned block is written to a fresh
  file and mapped again; a block that visited the device for an evaluation is pointed back at
  its mapping. Host memory holds the modules outside the blocks (copied, so that a mapping of
  the model file made by the loader goes), the streams and the block in flight; on a CPU
  device nothing moves and forward passes read the mapping. The folder goes when the run
  ends, however it ends (:meth:`Placement.close`). Loading still reads the whole model into
  host memory once: the saving starts after it.
* ``auto``: ``cpu`` when the device is CUDA and the estimate for ``none`` exceeds its free
  memory, else ``none`` (:func:`solver.run.estimate.choose_offload`); never ``disk``, which
  trades speed for host memory, a choice left to the user.

Every weight that travels goes through :func:`move` and every batch that goes to the device
through :func:`fetch`: one place each, which tests observe to account for the device's memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from solver.io import system
from solver.run.capture import BlockCall, move_calls
from solver.run.mapped import BlockFiles

HOST = torch.device("cpu")
"""Where offloaded weights and streams wait."""


def move(
    module: nn.Module, device: torch.device, *, back: bool = False, recurse: bool = True
) -> None:
    """Move a module's parameters and buffers to ``device``, in place.

    The one way weights travel in a run (tests observe it). Parameters keep their identity (a
    tied embedding and LM head stay tied), so weights pruned on the device are the host
    model's once they are back.

    Args:
        module: the module.
        device: where to.
        back: the move is back into host memory (else onto the run device; on a CPU run both
            are the host, and this says which way the run means it).
        recurse: also its submodules (else only the tensors it holds itself).
    """
    if recurse:
        module.to(device)
        return
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            param.data = param.data.to(device)
        for name, buffer in module.named_buffers(recurse=False):
            setattr(module, name, buffer.to(device))


def fetch(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One batch on ``device`` (asynchronous from pinned host memory; tests observe it)."""
    return tensor.to(device, non_blocking=True)


@dataclass
class Placement:
    """Where one run keeps its weights and streams (see the module text).

    Attributes:
        mode: ``none``, ``cpu`` or ``disk`` (``auto`` resolved by
            :func:`~solver.run.estimate.choose_offload`).
        device: the run device.
        reason: why ``auto`` chose ``mode`` (empty otherwise).
        files: with ``disk``, the blocks' memory-mapped files once :meth:`attach` made them.
    """

    mode: str = "none"
    device: torch.device = HOST
    reason: str = ""
    files: BlockFiles | None = field(default=None, repr=False)

    @property
    def offloads(self) -> bool:
        """Whether the weights and streams stay in host memory."""
        return self.mode != "none"

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """A stream's batch (or a cached layer input) where the streams live: on the device
        with ``none``, in host memory with ``cpu`` (pinned when the device is CUDA)."""
        if not self.offloads:
            return tensor.to(self.device)
        if self.device.type != "cuda":
            return tensor.to(HOST)
        try:
            if tensor.device.type == "cpu":
                return tensor if tensor.is_pinned() else tensor.pin_memory()
            pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            return pinned.copy_(tensor)
        except RuntimeError:  # pinning is an optimisation: plain host memory works too
            return tensor.to(HOST)

    def keep_last(self, store: dict[str, list[torch.Tensor]], skip: Sequence[str] = ()) -> None:
        """Move the newest entry of each list in ``store`` where the streams live (``cpu``: to
        host memory, right after the batch's pass recorded it); names in ``skip`` stay."""
        if not self.offloads:
            return
        for name, tensors in store.items():
            if name not in skip and tensors:
                tensors[-1] = self.keep(tensors[-1])

    def fetch(self, tensor: torch.Tensor) -> torch.Tensor:
        """One batch on the device for a forward pass or statistics (``none``: it is there)."""
        return fetch(tensor, self.device) if self.offloads else tensor

    def keep_calls(self, calls: list[list[BlockCall]]) -> list[list[BlockCall]]:
        """The blocks' other inputs where they wait: on the device with ``none``, in host memory
        with ``cpu`` (each batch's goes to the device with :meth:`fetch_call`)."""
        return calls if self.offloads else move_calls(calls, self.device)

    def fetch_call(self, call: BlockCall) -> BlockCall:
        """One batch's other block inputs on the device (``none``: they are there)."""
        if not self.offloads:
            return call
        memo: dict[int, torch.Tensor] = {}  # a tensor passed twice goes once
        return BlockCall(self._bring(call.args, memo), self._bring(call.kwargs, memo))

    def _bring(self, value: Any, memo: dict[int, torch.Tensor]) -> Any:
        """``value`` with every tensor in it fetched (no closure: nothing outlives the call)."""
        if isinstance(value, torch.Tensor):
            if id(value) not in memo:
                memo[id(value)] = self.fetch(value)
            return memo[id(value)]
        if isinstance(value, tuple):
            return tuple(self._bring(v, memo) for v in value)
        if isinstance(value, dict):
            return {k: self._bring(v, memo) for k, v in value.items()}
        return value

    def attach(
        self, model: nn.Module, blocks: nn.ModuleList | Sequence[nn.Module], folder: Path | None
    ) -> None:
        """``disk``: write every block's weights to its file in ``folder`` (``None``: a
        temporary folder) and map them; the other modes keep the weights where they are.

        The modules outside the blocks get a copy of their tensors of their own: transformers
        may have memory-mapped the whole model file for them and the blocks alike (a
        safetensors folder loaded in its own dtype), and that mapping, with the blocks' old
        pages in it, goes only when no tensor reads it any more. Call this once the blocks
        hold the weights the run starts from (loaded, or restored from a checkpoint).
        """
        if self.mode != "disk":
            return
        self.close()
        self.files = BlockFiles(folder)
        self.files.map_all(blocks)
        _copy_outside(model, blocks)
        system.release_freed_memory()

    def close(self) -> None:
        """Remove the ``disk`` folder (the run ended); nothing to do in the other modes."""
        if self.files is not None:
            self.files.close()
            self.files = None

    def block_in(self, block: nn.Module) -> None:
        """A block onto the device for its passes and solve."""
        move(block, self.device)

    def block_out(self, block: nn.Module) -> None:
        """A block back into host memory (with ``none`` on a CPU run it never left); with
        ``disk`` its pruned weights go to a fresh file, mapped in place of the old one."""
        if self.files is not None:
            self.files.map(block)
            system.release_freed_memory()
        if self.offloads or self.device.type != "cpu":
            move(block, HOST, back=True)  # with disk: already there (kept for the accounting)

    def block_home(self, block: nn.Module) -> None:
        """A block whose weights did not change back from a pass: as after an evaluation."""
        self._home(block)

    def _home(self, block: nn.Module) -> None:
        """A block back from its part of an evaluation: to host memory, or (``disk``, weights
        unchanged) pointed back at its mapping."""
        if self.files is not None:
            self.files.restore(block)
        move(block, HOST, back=True)

    @contextmanager
    def evaluating(
        self, model: nn.Module, blocks: nn.ModuleList | Sequence[nn.Module]
    ) -> Iterator[None]:
        """The model ready for forward passes on the device, back in host memory afterwards.

        ``none`` moves the whole model; ``cpu`` and ``disk`` move the modules outside the
        blocks and hook every block so that it is on the device only during its own forward.
        """
        if not self.offloads:
            move(model, self.device)
            try:
                yield
            finally:
                move(model, HOST, back=True)
            return
        outside, holders = _outside(model, blocks)
        on_device: dict[int, nn.Module] = {}

        def arrive(block: nn.Module, _args: Any) -> None:
            """Forward pre-hook: the block onto the device for its forward."""
            move(block, self.device)
            on_device[id(block)] = block

        def leave(block: nn.Module, _args: Any, _output: Any) -> None:
            """Forward hook: the block back into host memory (or its mapping)."""
            self._home(block)
            on_device.pop(id(block), None)

        handles = []
        try:
            for module in holders:
                move(module, self.device, recurse=False)
            for module in outside:
                move(module, self.device)
            for block in blocks:
                handles.append(block.register_forward_pre_hook(arrive, prepend=True))
                handles.append(block.register_forward_hook(leave))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for block in on_device.values():  # a forward pass that stopped inside it
                self._home(block)
            for module in outside:
                move(module, HOST, back=True)
            for module in holders:
                move(module, HOST, back=True, recurse=False)

    def describe(self) -> str:
        """One line for the run's events: where the weights and the streams live."""
        device = str(self.device)
        chose = f"offload auto chose {self.mode} ({self.reason}): " if self.reason else ""
        if not self.offloads:
            text = (
                f"the weights wait in host memory; each block moves to {device} for its passes "
                f"and solve, the whole model for each evaluation; the calibration streams live "
                f"on {device}"
            )
            return f"{chose or 'offload none: '}{text}"
        pinned = " (pinned)" if self.device.type == "cuda" else ""
        text = (
            f"the weights and the calibration streams stay in host memory{pinned}; one decoder "
            f"block at a time moves to {device} for its passes and solve, and for its part of "
            f"each evaluation, with the embeddings and the LM head there while evaluating"
        )
        if self.mode == "disk":
            folder = self.files.folder if self.files is not None else "a scratch folder"
            text = (
                f"the blocks' weights are memory-mapped from files in {folder}; host memory "
                f"holds the modules outside the blocks, the calibration streams{pinned} and the "
                f"block in flight; one decoder block at a time moves to {device} for its passes "
                f"and solve, and for its part of each evaluation"
            )
            if self.device.type == "cpu":
                text += " (the device is the host: the forward passes read the mapping)"
            return f"{chose or 'offload disk: '}{text}"
        if self.device.type == "cpu":
            text += " (the device is the host: this saves no memory here)"
        return f"{chose or 'offload cpu: '}{text}"


def _copy_outside(model: nn.Module, blocks: nn.ModuleList | Sequence[nn.Module]) -> None:
    """Give the tensors outside the decoder blocks memory of their own (a copy each; tied
    tensors stay tied), so that nothing outside the blocks reads a mapping the loader made."""
    outside, holders = _outside(model, blocks)
    # original id -> (original, copy): a tensor held twice is copied once; the originals stay
    # referenced until the end, so that no id is reused meanwhile
    copies: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for module, recurse in [(m, True) for m in outside] + [(m, False) for m in holders]:
            for sub in module.modules() if recurse else [module]:
                for param in sub.parameters(recurse=False):
                    if id(param) not in copies:  # the parameter keeps its identity
                        copies[id(param)] = (param, param)
                        param.data = param.data.clone()
                for name, buffer in sub.named_buffers(recurse=False):
                    if id(buffer) not in copies:
                        copies[id(buffer)] = (buffer, buffer.clone())
                    setattr(sub, name, copies[id(buffer)][1])


def _outside(
    model: nn.Module, blocks: nn.ModuleList | Sequence[nn.Module]
) -> tuple[list[nn.Module], list[nn.Module]]:
    """The modules outside the decoder blocks: ``(outside, holders)``.

    ``outside`` are the largest submodules that hold no block (embeddings, final norm, LM head,
    rotary tables); ``holders`` are the modules that contain blocks (the model, its base model,
    the block list), whose own tensors move without their submodules.
    """
    inside = {id(block) for block in blocks}
    names = [name for name, module in model.named_modules() if id(module) in inside]
    holding = {""}
    for name in names:
        parts = name.split(".")
        holding.update(".".join(parts[:i]) for i in range(1, len(parts)))
    outside: list[nn.Module] = []
    holders: list[nn.Module] = []
    for name, module in model.named_modules():
        if name in holding:
            holders.append(module)
            continue
        parent = name.rpartition(".")[0]
        if parent in holding and id(module) not in inside:
            outside.append(module)
    return outside, holders
