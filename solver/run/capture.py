"""Forward-pass plumbing for the layer-by-layer pipeline (ALGORITHM.md §6, steps 1 and 2).

* :func:`capture_block_inputs` runs the model up to its first decoder block and keeps what the
  block receives (hidden states plus keyword inputs such as rotary embeddings and masks).
* :func:`run_block` runs one block on one batch.
* :func:`capture_inputs` records the raw inputs of chosen linear layers during a block pass,
  optionally stopping the pass as soon as the last of them has been seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn

#: Keyword inputs of a decoder block that must not be replayed (caches are per call).
_DROP_KWARGS = frozenset({"past_key_value", "past_key_values", "cache", "use_cache"})


class StopForward(Exception):
    """Raised from a hook to end a forward pass early (caught by the capture helpers)."""


def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, batches: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Inputs of the first decoder block for each batch of token ids.

    Runs the model's forward on each batch (on the model's current device) and stops it at the
    first block, so only the embeddings and position encodings are computed.

    Args:
        model: the causal LM.
        first_block: its decoder block 0.
        batches: token id tensors, each ``[batch, seqlen]``.

    Returns:
        ``(hidden_states, kwargs)``: one ``[batch, seqlen, hidden]`` tensor and one dict of extra
        keyword inputs per batch.
    """
    hidden: list[torch.Tensor] = []
    extras: list[dict[str, Any]] = []

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        states = args[0] if args else kwargs.pop("hidden_states")
        hidden.append(states.detach())
        extras.append({k: v for k, v in kwargs.items() if k not in _DROP_KWARGS})
        raise StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in batches:
                with suppress(StopForward):
                    model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return hidden, extras


def move_kwargs(kwargs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A copy of a block's keyword inputs with every tensor (also inside tuples) on ``device``."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        return value

    return {k: move(v) for k, v in kwargs.items()}


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """One decoder block's output hidden states for one batch."""
    out = block(hidden, **kwargs)
    states: torch.Tensor = out[0] if isinstance(out, tuple) else out
    return states


@contextmanager
def capture_inputs(
    modules: Mapping[str, nn.Module], store: dict[str, list[torch.Tensor]], *, stop_after: str = ""
) -> Iterator[None]:
    """Record the raw input of each module (before any activation sparsity hook runs).

    The hooks are prepended, so they see the input exactly as the previous layer produced it.

    Args:
        modules: name -> module whose first positional input is recorded.
        store: name -> list that receives one detached tensor per forward call.
        stop_after: a name in ``modules``; its hook raises :class:`StopForward` after recording,
            so the block pass ends there (the caller catches it, e.g. via :func:`run_until`).
    """
    handles = []
    for name, module in modules.items():

        def hook(_module: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            store.setdefault(name, []).append(args[0].detach())
            if name == stop_after:
                raise StopForward

        handles.append(module.register_forward_pre_hook(hook, prepend=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_until(block: nn.Module, hidden: torch.Tensor, kwargs: dict[str, Any]) -> None:
    """Run a block pass that a :func:`capture_inputs` hook may stop early."""
    with suppress(StopForward):
        run_block(block, hidden, kwargs)
