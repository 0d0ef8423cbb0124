"""Finding a causal LM's decoder blocks, prunable projections and true-sequential groups.

ARCHITECTURE.md, "The solver side": model-family specifics are discovered, not tabled. From the
model object and one short traced forward pass:

* **blocks** — the ``nn.ModuleList`` whose entries the model calls once each, in order (the
  model's ``_no_split_modules`` names the block class where it has one);
* **prunable projections** — every ``nn.Linear`` (and subclasses) and transformers' ``Conv1D``
  inside a block that the forward actually calls, and every expert slice of a fused experts
  module (:mod:`solver.run.experts`); never embeddings, ``lm_head`` (they are outside the blocks)
  or MoE routers;
* **groups** — the layers that receive the same input tensor in the traced forward share their
  calibration statistics (ALGORITHM.md §6: q/k/v share one, gate/up another), in the order
  their input first appears; a fused experts module contributes two groups, its input-side
  slices and then its output-side slices, each slice calibrated on the tokens routed to it.

Name tables remain only as optional overrides (:data:`GROUP_OVERRIDES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from solver.errors import InputError
from solver.run import experts as experts_mod

TRACE_TOKENS = 8
"""Length of the token sequence the discovery trace runs through the model."""

ROUTER_NAMES = frozenset({"gate", "router", "shared_expert_gate"})
"""Last name parts of MoE routers (and shared-expert gates): never pruned."""

GROUP_OVERRIDES: dict[str, tuple[tuple[str, ...], ...]] = {}
"""Optional per-family overrides of the discovered groups (model type -> layer names inside a
block, grouped by shared input, in execution order). Empty: every family is traced."""


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` (GPT-2's projections), or None when it cannot be imported."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        return None
    return cast(type[nn.Module], Conv1D)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers ``Conv1D`` (weight stored ``[in, out]``)."""
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


def is_projection(module: nn.Module) -> bool:
    """An ``nn.Linear`` (or subclass) or a transformers ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def layer_weight(module: nn.Module) -> Tensor:
    """A prunable layer's weight as ``[out, in]``, a view of the layer's own storage.

    ``nn.Linear`` and expert slices store ``[out, in]``; ``Conv1D`` stores ``[in, out]``, so its
    view is the transpose: a solve reads this view and writes the result back through it, in
    the layer's own layout.
    """
    weight = cast(Tensor, module.weight).data
    return weight.T if is_conv1d(module) else weight


def in_features(module: nn.Module) -> int:
    """A prunable layer's input width."""
    return int(layer_weight(module).shape[1])


@dataclass(frozen=True)
class Group:
    """Layers of one block that are calibrated together (ALGORITHM.md §6, "true sequential").

    Attributes:
        names: the layers' names inside the block, in execution order.
        experts: for expert slices, the experts module's name inside the block (each slice is
            then calibrated on the tokens routed to its expert); ``""`` when the layers share
            one input tensor.
        role: for expert slices, ``in`` (the input side, ``gate_up_proj``) or ``out``
            (``down_proj``).
    """

    names: tuple[str, ...]
    experts: str = ""
    role: str = ""

    @property
    def routed(self) -> bool:
        """Whether the group's layers are expert slices with their own routed tokens."""
        return bool(self.experts)


@dataclass(frozen=True)
class BlockLayout:
    """One decoder block's prunable layers.

    Attributes:
        groups: in execution order.
        experts: the fused experts modules inside the block, by name.
    """

    groups: tuple[Group, ...]
    experts: dict[str, experts_mod.ExpertsLayout] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Every prunable layer of the block, in execution order."""
        return tuple(name for group in self.groups for name in group.names)

    def describe(self) -> str:
        """The groups in one line: ``[q, k, v] -> [o] -> ...`` with short names."""
        parts = []
        for group in self.groups:
            if group.routed:
                param = group.names[0].rsplit(".", 1)[-1]
                parts.append(f"[{group.experts}.{{0..{len(group.names) - 1}}}.{param}]")
            else:
                parts.append("[" + ", ".join(group.names) + "]")
        return " -> ".join(parts)


@dataclass
class Discovered:
    """What :func:`discover` found.

    Attributes:
        path: the block list's name in the model (``model.layers``, ``transformer.h``).
        layouts: one per block.
        skipped: prunable-looking modules left alone, with why (name -> reason).
    """

    path: str
    layouts: list[BlockLayout]
    skipped: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# the block list


def block_candidates(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """ModuleLists that may be the decoder blocks, outermost first.

    A candidate's entries are all of one class (or all of the block classes the model names in
    ``_no_split_modules``: hybrid models mix attention and other blocks) and hold prunable
    projections or fused experts; a list nested inside another candidate's entries (an MoE
    block's expert list) is not one. Lists of the named block classes come first.
    """
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    found: list[tuple[str, nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(f"{outer}.") for outer, _ in found):
            continue
        classes = {type(entry).__name__ for entry in module}
        if len(classes) != 1 and not classes <= no_split:
            continue
        if not any(_has_prunable(entry) for entry in module):
            continue
        found.append((name, module))
    return sorted(found, key=lambda item: type(item[1][0]).__name__ not in no_split)


def _has_prunable(module: nn.Module) -> bool:
    for sub in module.modules():
        if is_projection(sub):
            return True
        if any(p.ndim == 3 for p in sub.parameters(recurse=False)):
            return True
    return False


# --------------------------------------------------------------------------------------------
# the trace


@dataclass
class _Call:
    """One call of a prunable layer (or of a fused experts module) in the traced forward."""

    name: str
    key: tuple[Any, ...]
    experts: bool = False


@dataclass
class _Trace:
    """What the traced forward recorded, per candidate list."""

    order: dict[str, list[int]] = field(default_factory=dict)  # list name -> entries called
    calls: dict[tuple[str, int], list[_Call]] = field(default_factory=dict)
    keep: list[Tensor] = field(default_factory=list)  # inputs kept alive: keys stay unique


def _input_key(x: Tensor) -> tuple[Any, ...]:
    """What identifies one input tensor: its storage, view geometry, dtype and version."""
    return (
        x.untyped_storage().data_ptr(),
        x.storage_offset(),
        tuple(x.shape),
        tuple(x.stride()),
        x.dtype,
        -1 if x.is_inference() else x._version,  # inference tensors have no version counter
    )


def trace(
    model: nn.Module,
    candidates: list[tuple[str, nn.ModuleList]],
    prepare: Callable[[nn.Module], dict[str, Any]],
) -> _Trace:
    """Run one short forward pass and record block calls and prunable-layer inputs.

    Args:
        model: the causal LM (on any device; it is not moved).
        candidates: the possible block lists.
        prepare: for a block, its prunable modules by name (layers and fused experts modules).
    """
    record = _Trace()
    handles: list[Any] = []

    def on_block(list_name: str, index: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: tuple[Any, ...]) -> None:
            record.order.setdefault(list_name, []).append(index)

        return hook

    def on_layer(list_name: str, index: int, name: str, experts: bool) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            calls = record.calls.setdefault((list_name, index), [])
            if any(c.name == name for c in calls):
                return
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
            if not isinstance(x, Tensor):
                return
            record.keep.append(x)
            calls.append(_Call(name, _input_key(x), experts))

        return hook

    for list_name, blocks in candidates:
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(on_block(list_name, index)))
            for name, (module, is_experts) in prepare(block).items():
                handles.append(
                    module.register_forward_pre_hook(
                        on_layer(list_name, index, name, is_experts), with_kwargs=True
                    )
                )
    ids = _trace_ids(model)
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return record


def _trace_ids(model: nn.Module) -> Tensor:
    """A short, fixed token sequence inside the model's vocabulary, on the model's device."""
    config = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if not vocab:
        embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
        vocab = embedding.num_embeddings if embedding is not None else 256
    device = next(model.parameters()).device
    ids = (torch.arange(TRACE_TOKENS) * 7919 + 11) % max(vocab - 1, 1) + 1
    return ids.unsqueeze(0).to(device)


# --------------------------------------------------------------------------------------------
# the whole discovery


def block_modules(block: nn.Module) -> dict[str, tuple[nn.Module, bool]]:
    """A block's candidate prunable modules by name: projections and fused experts modules.

    Routers are left out: their name is in :data:`ROUTER_NAMES`, or they sit in a block with
    fused experts, are not named ``*_proj`` and have one output per expert (or a single output,
    a shared expert's gate). Expert slices are reached through their experts module. The flag
    marks a fused experts module.

    Raises:
        InputError: a fused experts module has a layout that is not supported.
    """
    found: dict[str, tuple[nn.Module, bool]] = {}
    expert_counts: set[int] = set()
    for name, module in block.named_modules():
        layout = experts_mod.fused_layout(module) if name else None
        if layout is not None:
            experts_mod.install(module, layout)
            found[name] = (module, True)
            expert_counts.add(layout.n_experts)
    for name, module in block.named_modules():
        if not name or not is_projection(module):
            continue
        last = name.rsplit(".", 1)[-1]
        outputs = int(layer_weight(module).shape[0])
        routes_tokens = outputs in expert_counts | {1} and not last.endswith("_proj")
        if last in ROUTER_NAMES or (expert_counts and routes_tokens):
            continue
        found[name] = (module, False)
    return found


def require_block_list(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The model's :func:`block_candidates`; refuse a model that has none.

    The static part of :func:`discover`: it reads only the module tree, so it also runs on a
    skeleton built on the ``meta`` device (the pre-flight, :mod:`solver.run.input_checks`).

    Raises:
        InputError: no decoder block list (one line naming the family and what is supported).
    """
    candidates = block_candidates(model)
    if not candidates:
        raise InputError(
            f"model family {_model_type(model)!r} has no decoder block list with linear "
            "projections: DuoGPT prunes decoder-only transformers (llama, qwen2, gemma, phi3, "
            "gpt2, opt, mixtral...)"
        )
    return candidates


def _model_type(model: nn.Module) -> str:
    """The model's ``config.model_type``, else its class name."""
    return str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))


def discover(model: nn.Module) -> Discovered:
    """Find the decoder blocks, their prunable layers and the groups (see the module docstring).

    Raises:
        InputError: no decoder block list, a block list the model does not call in order, or a
            layout that cannot be pruned.
    """
    model_type = _model_type(model)
    candidates = require_block_list(model)
    record = trace(model, candidates, block_modules)
    chosen = _choose(candidates, record)
    if chosen is None:
        raise InputError(
            f"model family {model_type!r}: no module list is called block after block by the "
            "model's forward, so its decoder blocks cannot be walked; use a decoder-only "
            "transformer (llama, qwen2, gemma, phi3, gpt2, opt, mixtral...)"
        )
    path, blocks = chosen
    override = GROUP_OVERRIDES.get(model_type)
    layouts: list[BlockLayout] = []
    skipped: dict[str, str] = {}
    for index, block in enumerate(blocks):
        modules = block_modules(block)
        calls = record.calls.get((path, index), [])
        called = {c.name for c in calls}
        for name, (_module, is_experts) in modules.items():
            if name not in called and not is_experts:
                skipped[f"{path}.{index}.{name}"] = "not called by the forward pass"
        if override is not None:
            groups = tuple(Group(tuple(names)) for names in override)
        else:
            groups = _groups(calls, modules)
        experts_here = {
            name: experts_mod.installed(module).layout
            for name, (module, is_experts) in modules.items()
            if is_experts
        }
        layouts.append(BlockLayout(groups, experts_here))
    if not any(layout.groups for layout in layouts):
        raise InputError(
            f"model family {model_type!r}: the forward pass calls no linear projection inside "
            "its decoder blocks, so there is nothing to prune"
        )
    return Discovered(path, layouts, skipped)


def _choose(
    candidates: list[tuple[str, nn.ModuleList]], record: _Trace
) -> tuple[str, nn.ModuleList] | None:
    """The first candidate whose entries the forward called once each, in order."""
    for name, blocks in candidates:
        if record.order.get(name) == list(range(len(blocks))):
            return name, blocks
    return None


def _groups(calls: list[_Call], modules: dict[str, tuple[nn.Module, bool]]) -> tuple[Group, ...]:
    """Groups from one block's calls: layers with the same input key, in first-call order."""
    groups: list[Group] = []
    by_key: dict[tuple[Any, ...], list[str]] = {}
    order: list[tuple[Any, ...] | str] = []
    for call in calls:
        if call.experts:
            order.append(call.name)
            continue
        if call.key not in by_key:
            by_key[call.key] = []
            order.append(call.key)
        by_key[call.key].append(call.name)
    for item in order:
        if isinstance(item, str):
            module = modules[item][0]
            prepared = experts_mod.installed(module)
            for role, param in (("in", prepared.layout.in_param), ("out", experts_mod.OUT_PARAM)):
                names = tuple(f"{item}.{e}.{param}" for e in range(prepared.layout.n_experts))
                groups.append(Group(names, experts=item, role=role))
        else:
            groups.append(Group(tuple(by_key[item])))
    return tuple(groups)


def iter_layers(block: nn.Module, layout: BlockLayout) -> Iterator[tuple[str, nn.Module]]:
    """The block's prunable layers by name, in execution order (expert slices included)."""
    for group in layout.groups:
        if group.routed:
            prepared = experts_mod.installed(block.get_submodule(group.experts))
            param = prepared.layout.in_param if group.role == "in" else experts_mod.OUT_PARAM
            yield from zip(group.names, prepared.slices[param], strict=True)
        else:
            for name in group.names:
                yield name, block.get_submodule(name)
