"""Calibrating and pruning the expert slices of a fused MoE block on their routed tokens.

ALGORITHM.md §6 for experts (:mod:`solver.run.experts`): each expert's input-side slice
(``gate_up_proj``) and output-side slice (``down_proj``) is one layer, calibrated only on the
tokens the router sends to that expert. The statistics are collected inside the experts module,
from its call, on both streams:

* the dense pass records the experts module's input ``X~`` for every token;
* a compressed pass reads the module's input ``X^`` and the router's choice; for each expert
  the input side sees ``X^`` of its tokens, paired with ``X~`` of the same tokens; the output
  side sees the gate of the (already pruned, activation-sparse) input slice's output, paired
  with the gate computed from the *original* input slice on ``X~``. The tokens are the ones the
  compressed model routes to the expert **[choice]**: they are what the pruned expert will see.

An expert slice that receives fewer than :data:`~solver.run.experts.MIN_EXPERT_TOKENS` tokens is
not given a second-order solve; it falls back to Wanda (magnitude with no token at all), and a
note says so. The router is never pruned.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from solver.events import Event, Note
from solver.run import experts as experts_mod
from solver.run import layers, methods
from solver.run.capture import StopForward
from solver.run.context import RunContext
from solver.run.discovery import Group


@dataclass
class Routed:
    """What the compressed passes recorded for expert slices, by slice name inside the block.

    Attributes:
        raw: each slice's compressed-stream inputs, one ``[tokens, k]`` tensor per batch.
        dense: the dense-stream inputs of the same tokens.
        tokens: calibration tokens per slice.
    """

    raw: dict[str, list[Tensor]] = field(default_factory=dict)
    dense: dict[str, list[Tensor]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, raw: Tensor, dense: Tensor) -> None:
        """One batch's inputs of one slice."""
        self.raw.setdefault(name, []).append(raw)
        self.dense.setdefault(name, []).append(dense)
        self.tokens[name] = self.tokens.get(name, 0) + int(raw.shape[0])

    def drop(self, names: tuple[str, ...]) -> None:
        """Forget the inputs of solved slices."""
        for name in names:
            self.raw.pop(name, None)
            self.dense.pop(name, None)


def originals(
    block: nn.Module, groups: tuple[Group, ...]
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """A copy of each experts module's input-side weights (and biases) before pruning.

    The output side's dense input is the gate of the *original* input slice on ``X~``; the copy
    keeps it computable after the input slices are pruned.
    """
    saved: dict[str, tuple[Tensor, Tensor | None]] = {}
    for group in groups:
        if group.routed and group.experts not in saved:
            module = block.get_submodule(group.experts)
            layout = experts_mod.installed(module).layout
            weight = getattr(module, layout.in_param).detach().clone()
            bias = getattr(module, f"{layout.in_param}_bias", None) if layout.bias else None
            saved[group.experts] = (weight, None if bias is None else bias.detach().clone())
    return saved


@contextmanager
def capture_routed(
    block: nn.Module,
    groups: list[Group],
    record: Routed,
    dense_hidden: dict[str, list[Tensor]],
    saved: dict[str, tuple[Tensor, Tensor | None]],
    *,
    stop: bool = False,
) -> Iterator[None]:
    """Record the routed inputs of the expert slices of ``groups`` during compressed passes.

    Args:
        block: the decoder block.
        groups: routed groups (of one or more experts modules, either role).
        record: receives each slice's inputs.
        dense_hidden: per experts module, its dense-pass inputs, one ``[tokens, hidden]`` per
            batch (the batches come in the same order).
        saved: :func:`originals`.
        stop: end the block pass at the (last) experts module's call.
    """
    by_module: dict[str, set[str]] = {}
    for group in groups:
        by_module.setdefault(group.experts, set()).add(group.role)
    handles = []
    calls: dict[str, int] = {}
    for position, (name, roles) in enumerate(by_module.items()):
        module = block.get_submodule(name)
        last = position == len(by_module) - 1

        def hook(
            module: nn.Module,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            name: str = name,
            roles: set[str] = roles,
            last: bool = last,
        ) -> None:
            batch = calls.get(name, 0)
            calls[name] = batch + 1
            hidden, top_k_index = experts_mod.expert_inputs(args, kwargs)
            dense_in = dense_hidden[name][batch].reshape(-1, hidden.shape[-1])
            _record(module, name, roles, hidden, top_k_index, dense_in, saved[name], record)
            if stop and last:
                raise StopForward

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True, prepend=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _record(
    module: nn.Module,
    name: str,
    roles: set[str],
    hidden: Tensor,
    top_k_index: Tensor,
    dense_in: Tensor,
    saved: tuple[Tensor, Tensor | None],
    record: Routed,
) -> None:
    """One batch's routed inputs of every expert of one experts module."""
    prepared = experts_mod.installed(module)
    layout = prepared.layout
    in_param = layout.in_param
    for expert, tokens, _position in experts_mod.routes(top_k_index, layout.n_experts):
        x_raw, x_dense = hidden[tokens], dense_in[tokens]
        if "in" in roles:
            record.add(f"{name}.{expert}.{in_param}", x_raw.detach(), x_dense.detach())
        if "out" in roles:
            h_raw = experts_mod.gate(module, layout, prepared.up(expert)(x_raw))
            weight, bias = saved
            w = weight[expert].T if layout.transposed else weight[expert]
            b = None if bias is None else bias[expert]
            h_dense = experts_mod.gate(module, layout, functional.linear(x_dense, w, b))
            out_name = f"{name}.{expert}.{experts_mod.OUT_PARAM}"
            record.add(out_name, h_raw.detach(), h_dense.detach())


def fallback(method: methods.Method, tokens: int) -> methods.Method:
    """The method an expert slice with ``tokens`` calibration tokens is pruned with.

    A second-order method needs :data:`~solver.run.experts.MIN_EXPERT_TOKENS` tokens, else it
    falls back to Wanda; any method that reads statistics falls back to magnitude with none.
    """
    reads = method.reads.hessian or method.reads.norms
    if not method.prunes or not reads:
        return method
    if tokens == 0:
        return methods.get("magnitude")
    if method.reads.hessian and tokens < experts_mod.MIN_EXPERT_TOKENS:
        return methods.get("wanda")
    return method


def prune_experts(
    run: RunContext,
    index: int,
    group: Group,
    linears: dict[str, nn.Module],
    full: dict[str, str],
    record: Routed,
    timings: dict[str, float],
) -> Iterator[Event]:
    """Each expert slice of a routed group: its statistics on its own tokens, then its solve.

    Yields a note with the tokens per expert (for the input side) and one for the slices that
    fell back to Wanda or magnitude, then one :class:`~solver.events.LayerSolved` per slice.
    """
    counts = [record.tokens.get(name, 0) for name in group.names]
    param = group.names[0].rsplit(".", 1)[-1]
    if group.role == "in":
        yield Note(
            t=run.t(),
            text=f"block {index} {group.experts}: calibration tokens per expert "
            f"{', '.join(str(c) for c in counts)} (top-k routing of the compressed stream)",
        )
    fell_back = []
    # slices without a token come last: they borrow the others' activation thresholds
    order = sorted(zip(group.names, counts, strict=True), key=lambda item: item[1] == 0)
    for name, tokens in order:
        method = fallback(run.method, tokens)
        if method is not run.method:
            fell_back.append(f"{name.removeprefix(group.experts + '.')} ({tokens}: {method.name})")
        raw = record.raw.get(name, [])
        dense = record.dense.get(name, [])
        # tokens counts every rank's: all ranks borrow, or all calibrate together
        if tokens == 0 and run.config.act_rule == "threshold" and run.config.act_sparsity > 0:
            _borrow_threshold(run, group, full, name)
        yield from layers.prune_group(
            run, index, (name,), linears, full, raw, dense, timings, method=method
        )
    record.drop(group.names)
    if fell_back:
        yield Note(
            t=run.t(),
            level="warning",
            text=f"block {index} {group.experts} {param}: expert slices with fewer than "
            f"{experts_mod.MIN_EXPERT_TOKENS} calibration tokens were pruned without the "
            "second-order solve (with Wanda; with magnitude when they got no token): "
            f"{', '.join(fell_back)}",
        )


def _borrow_threshold(run: RunContext, group: Group, full: dict[str, str], name: str) -> None:
    """An expert slice with no calibration token takes its group's mean activation threshold."""
    known = [run.thresholds[full[n]] for n in group.names if full[n] in run.thresholds]
    run.thresholds[full[name]] = float(torch.tensor(known).mean()) if known else 0.0
