"""Forward-pass plumbing for the layer-by-layer pipeline (ALGORITHM.md §6, steps 1 and 2).

* :func:`capture_stack_inputs` runs the model's forward once per calibration batch, keeps the
  hidden states that enter the first decoder block and, for every block, exactly what the model
  passes it besides them (positional and keyword inputs: position embeddings, the attention
  mask of the block's attention type, ...), with the cache off. The blocks themselves are not
  computed: each is replaced by a pass-through for the capture.
* :func:`capture_block_inputs` does the same for the first block only.
* :func:`run_block` runs one block on one batch with its captured inputs.
* :func:`capture_inputs` records the raw inputs of chosen linear layers during a block pass,
  optionally stopping the pass as soon as the last of them has been seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: Keyword inputs of a decoder block that must not be replayed (caches are per call).
_DROP_KWARGS = frozenset(
    {"past_key_value", "past_key_values", "cache", "use_cache", "layer_past", "cache_params"}
)


@dataclass
class BlockCall:
    """What the model passes a decoder block besides its hidden states, for one batch.

    Attributes:
        args: positional inputs after the hidden states (a cache among them is ``None``).
        kwargs: keyword inputs, without caches.
    """

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


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


def capture_stack_inputs(
    model: nn.Module, blocks: nn.ModuleList | Sequence[nn.Module], batches: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[list[BlockCall]]]:
    """The first block's hidden states and every block's other inputs, for each batch.

    Runs the model's forward on each batch (on the model's current device) with every block
    replaced by a pass-through that records its call, and stops after the last block: only the
    embeddings, position encodings and masks are computed. The first block runs for real on the
    first batch, to learn whether a block returns a tensor or a tuple. Inputs shared by several
    blocks (one rotary table, one mask per attention type) are kept once.

    Args:
        model: the causal LM.
        blocks: its decoder blocks, in the order the model calls them.
        batches: token id tensors, each ``[batch, seqlen]``.

    Returns:
        ``(hidden_states, calls)``: one ``[batch, seqlen, hidden]`` tensor per batch, and per
        block one :class:`BlockCall` per batch.
    """
    hidden: list[torch.Tensor] = []
    calls: list[list[BlockCall]] = [[] for _ in blocks]
    returns_tuple: list[bool] = []
    last = len(blocks) - 1
    saved = [block.__dict__.get("forward") for block in blocks]
    originals = [block.forward for block in blocks]

    def stub(index: int) -> Any:
        def forward(*args: Any, **kwargs: Any) -> Any:
            states, rest, extra = _split_call(args, kwargs)
            calls[index].append(BlockCall(rest, extra))
            if index == 0:
                hidden.append(states.detach())
                if not returns_tuple:  # once: run block 0 for real to see what it returns
                    out = originals[0](*args, **kwargs)
                    returns_tuple.append(isinstance(out, tuple))
            if index == last:
                raise StopForward
            return (states,) if returns_tuple and returns_tuple[0] else states

        return forward

    try:
        for index, block in enumerate(blocks):
            block.forward = stub(index)
        with torch.no_grad():
            for ids in batches:
                with suppress(StopForward):
                    model(input_ids=ids, use_cache=False)
    finally:
        for block, forward in zip(blocks, saved, strict=True):
            if forward is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = forward
    return hidden, calls


def _split_call(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, tuple[Any, ...], dict[str, Any]]:
    """``(hidden_states, other positional inputs, keyword inputs)`` of a block call, no caches."""
    kwargs = dict(kwargs)
    states = args[0] if args else kwargs.pop("hidden_states")
    rest = tuple(None if _is_cache(value) else value for value in args[1:])
    extra = {k: v for k, v in kwargs.items() if k not in _DROP_KWARGS and not _is_cache(v)}
    return states, rest, extra


def _is_cache(value: Any) -> bool:
    """A transformers ``Cache`` object (never replayed: caches are per call)."""
    return any(cls.__name__.endswith("Cache") for cls in type(value).__mro__)


def move_calls(calls: list[list[BlockCall]], device: torch.device) -> list[list[BlockCall]]:
    """Every block's inputs on ``device``; a tensor shared by several blocks stays shared."""
    memo: dict[int, Any] = {}

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            key = id(value)
            if key not in memo:
                memo[key] = value.to(device)
            return memo[key]
        if isinstance(value, tuple):
            return tuple(move(v) for v in value)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return [
        [BlockCall(move(call.args), move(call.kwargs)) for call in per_block] for per_block in calls
    ]


def run_block(
    block: nn.Module, hidden: torch.Tensor, inputs: BlockCall | Mapping[str, Any]
) -> torch.Tensor:
    """One decoder block's output hidden states for one batch.

    Args:
        block: the block.
        hidden: its input hidden states.
        inputs: what the model passes it besides them (a :class:`BlockCall`, or keyword inputs).
    """
    if isinstance(inputs, BlockCall):
        out = block(hidden, *inputs.args, **inputs.kwargs)
    else:
        out = block(hidden, **inputs)
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


def run_until(
    block: nn.Module, hidden: torch.Tensor, inputs: BlockCall | Mapping[str, Any]
) -> None:
    """Run a block pass that a :func:`capture_inputs` hook may stop early."""
    with suppress(StopForward):
        run_block(block, hidden, inputs)
