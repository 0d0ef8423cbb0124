"""Mixture-of-experts blocks whose experts are fused 3-D parameters (Mixtral, Qwen3-MoE...).

ALGORITHM.md §1 prunes every linear projection inside a decoder block. Recent transformers keep
the experts of an MoE block as one module with fused parameters, not ``nn.Linear`` modules:
``gate_up_proj`` is ``[E, 2I, H]`` and ``down_proj`` is ``[E, H, I]``, and the module's forward
takes ``(hidden_states, top_k_index, top_k_weights)`` from the router. To prune them like any
other layer this module

* gives every expert's slice of each fused parameter a small module, :class:`ExpertSlice`, whose
  ``weight`` is a view of the slice in ``[out, in]`` layout (writing it writes the parameter),
  and whose forward is the slice's linear map;
* replaces the experts module's forward (on that instance only, see :func:`install`) by the
  eager per-expert loop of transformers, calling the slices, so that activation sparsity hooks
  see each expert's input and the calibration can record it;
* routes calibration tokens: :func:`routes` says which tokens the router sent to each expert,
  so each expert's slices are calibrated on their own tokens (:mod:`solver.run.blocks`).

The router is not an expert slice and is never pruned. The slices are not registered as
submodules, so the model's ``state_dict`` and ``save_pretrained`` are unchanged.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional

from solver.errors import InputError

IN_PARAMS = ("gate_up_proj", "up_proj")
"""Names of the fused input-side projection (gated ``[gate; up]`` or plain ``up``)."""

OUT_PARAM = "down_proj"
"""Name of the fused output-side projection."""

MIN_EXPERT_TOKENS = 16
"""An expert slice that receives fewer calibration tokens than this is not given a second-order
(OBS) solve: its ``k x k`` statistics would be noise. It falls back to Wanda, or to magnitude
when it received no token at all, and the run says so in a note."""

_SLICES = "_duogpt_slices"  # where an installed experts module keeps its slices


@dataclass(frozen=True)
class ExpertsLayout:
    """How one fused experts module stores its experts.

    Attributes:
        n_experts: ``E``.
        in_param: the input-side parameter (``gate_up_proj`` or ``up_proj``).
        transposed: the parameters are stored ``[E, in, out]`` instead of ``[E, out, in]``.
        bias: each parameter has a ``<name>_bias`` of shape ``[E, out]``.
        gated: the input side is ``[gate; up]`` and the gate is applied before ``down_proj``.
    """

    n_experts: int
    in_param: str
    transposed: bool = False
    bias: bool = False
    gated: bool = True

    @property
    def params(self) -> tuple[str, str]:
        """The fused parameters, input side first."""
        return (self.in_param, OUT_PARAM)


def fused_layout(module: nn.Module) -> ExpertsLayout | None:
    """The layout of ``module`` if it is a fused experts module, else None.

    A fused experts module holds 3-D parameters, one slice per expert, directly (not in
    submodules). Only the layout of transformers' ``use_experts_implementation`` experts is
    supported: ``gate_up_proj`` (or ``up_proj``) and ``down_proj``, optionally transposed or with
    biases.

    Raises:
        InputError: the module holds 3-D parameters in a layout this tool does not know.
    """
    params = dict(module.named_parameters(recurse=False))
    fused = {name: p for name, p in params.items() if p.ndim == 3}
    if not fused:
        return None
    in_param = next((name for name in IN_PARAMS if name in fused), "")
    kind = type(module).__name__
    if not in_param or OUT_PARAM not in fused or getattr(module, "has_post_expert_norm", False):
        raise InputError(
            f"the experts module {kind} stores its experts as {', '.join(sorted(fused))}: only "
            "fused experts with gate_up_proj/up_proj and down_proj (Mixtral, Qwen-MoE layout) "
            "are supported"
        )
    n_experts = int(fused[OUT_PARAM].shape[0])
    transposed = bool(getattr(module, "is_transposed", False))
    gated = in_param == "gate_up_proj" and bool(getattr(module, "has_gate", True))
    bias = bool(getattr(module, "has_bias", False)) and f"{OUT_PARAM}_bias" in params
    return ExpertsLayout(n_experts, in_param, transposed=transposed, bias=bias, gated=gated)


class ExpertSlice(nn.Module):
    """One expert's slice of a fused experts parameter, as a linear layer.

    ``weight`` is a view of the slice in ``[out, in]`` layout (a transposed view when the
    parameter is stored transposed), so pruning it in place prunes the fused parameter.

    Attributes:
        param: the fused parameter's name (``gate_up_proj``, ``down_proj``).
        index: the expert.
    """

    def __init__(self, experts: nn.Module, layout: ExpertsLayout, param: str, index: int) -> None:
        super().__init__()
        self.__dict__["_experts"] = experts  # not a submodule: the model tree stays as it is
        self.param = param
        self.index = index
        self.transposed = layout.transposed
        self.has_bias = layout.bias

    @property
    def weight(self) -> Tensor:
        """The slice, ``[out, in]`` (a view: writing it writes the fused parameter)."""
        fused = cast(Tensor, getattr(self.__dict__["_experts"], self.param))
        piece = fused[self.index]
        return piece.T if self.transposed else piece

    @property
    def bias(self) -> Tensor | None:
        """The slice's bias, or None."""
        if not self.has_bias:
            return None
        return cast(Tensor, getattr(self.__dict__["_experts"], f"{self.param}_bias"))[self.index]

    @property
    def in_features(self) -> int:
        """Input width."""
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        """Output width."""
        return int(self.weight.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        """``x W^T (+ b)``."""
        return functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.param}[{self.index}], in={self.in_features}, out={self.out_features}"


@dataclass(frozen=True)
class Installed:
    """An experts module made prunable by :func:`install`.

    Attributes:
        layout: its layout.
        slices: per fused parameter, one :class:`ExpertSlice` per expert.
    """

    layout: ExpertsLayout
    slices: dict[str, tuple[ExpertSlice, ...]]

    def up(self, index: int) -> ExpertSlice:
        """Expert ``index``'s input-side slice."""
        return self.slices[self.layout.in_param][index]

    def down(self, index: int) -> ExpertSlice:
        """Expert ``index``'s output-side slice."""
        return self.slices[OUT_PARAM][index]


def install(module: nn.Module, layout: ExpertsLayout) -> Installed:
    """Make a fused experts module prunable (idempotent): slices, and the eager forward.

    The module's forward is replaced, on this instance, by :func:`eager_forward`, which computes
    what the module's own forward computes (transformers' eager loop) through the slices.
    """
    found = module.__dict__.get(_SLICES)
    if isinstance(found, Installed):
        return found
    slices = {
        param: tuple(ExpertSlice(module, layout, param, e) for e in range(layout.n_experts))
        for param in layout.params
    }
    installed = Installed(layout, slices)
    module.__dict__[_SLICES] = installed
    module.forward = types.MethodType(eager_forward, module)
    return installed


def installed(module: nn.Module) -> Installed:
    """The slices of an experts module that :func:`install` prepared."""
    found = module.__dict__.get(_SLICES)
    if not isinstance(found, Installed):
        raise KeyError(f"{type(module).__name__} is not an installed experts module")
    return found


def routes(top_k_index: Tensor, n_experts: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(expert, token indices, top-k positions)`` for every expert the router chose.

    Args:
        top_k_index: ``[tokens, top_k]`` expert indices (an index of ``n_experts`` or more, used
            by expert parallelism for "not here", is skipped).
        n_experts: ``E``.
    """
    mask = functional.one_hot(top_k_index, num_classes=n_experts + 1).permute(2, 1, 0)
    hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
    for row in hit:
        expert = int(row[0])
        if expert >= n_experts:
            continue
        position, tokens = torch.where(mask[expert])
        yield expert, tokens, position


def gate(module: nn.Module, layout: ExpertsLayout, up: Tensor) -> Tensor:
    """The input of ``down_proj`` from the input side's output (the gate, or the activation)."""
    if layout.gated:
        apply = getattr(module, "_apply_gate", None)
        if apply is not None:
            return cast(Tensor, apply(up))
        first, second = up.chunk(2, dim=-1)
        return cast(Tensor, _act(module)(first)) * second
    return cast(Tensor, _act(module)(up))


def _act(module: nn.Module) -> Any:
    """The experts module's activation function."""
    return module.act_fn


def eager_forward(
    self: nn.Module, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor
) -> Tensor:
    """The experts' forward as transformers' eager loop, through the expert slices."""
    prepared = installed(self)
    out = torch.zeros_like(hidden_states)
    for expert, tokens, position in routes(top_k_index, prepared.layout.n_experts):
        x = hidden_states[tokens]
        h = gate(self, prepared.layout, prepared.up(expert)(x))
        y = prepared.down(expert)(h) * top_k_weights[tokens, position, None]
        out.index_add_(0, tokens, y.to(out.dtype))
    return out


def expert_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """``(hidden_states, top_k_index)`` of one call of an experts module."""
    names = ("hidden_states", "top_k_index")
    values = [*args[:2]] + [kwargs[n] for n in names[len(args[:2]) :]]
    return cast(Tensor, values[0]), cast(Tensor, values[1])
