"""Activation thresholds calibrated on the stream that evaluation will feed them (threshold rule).

A layer's threshold is a quantile of its inputs. Evaluation runs the pruned model with every
layer's activation sparsity on, so each layer's inputs there already carry the sparsity of the
layers upstream. A threshold fitted to inputs without that upstream sparsity zeroes more than
the target at evaluation (SmolLM2: 52.8% measured for a 50% target, issue 9).

Methods that calibrate on activation-sparse inputs (DuoGPT) see that stream while pruning, group
by group, and keep the thresholds they calibrated there. For the others (SparseGPT, Wanda,
magnitude, dense), :func:`recalibrate` walks the pruned model once more after pruning, block by
block with activation sparsity on, and calibrates each group's threshold on inputs that carry
the sparsity of every layer before it. :func:`calibrate_groups` does that walk inside one block;
pruning all at once (``--all-at-once``) uses it too, before the block's statistics pass.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from solver.events import Event, Note, Progress
from solver.math.activations import ActivationSparsifier, calibrate_threshold
from solver.run.adapters import ModelAdapter
from solver.run.capture import BlockCall, capture_inputs, capture_stack_inputs, run_block, run_until
from solver.run.context import RunContext
from solver.run.discovery import Group, in_features


def needs_recalibration(run: RunContext) -> bool:
    """Whether the thresholds calibrated while pruning did not see upstream activation sparsity:
    the threshold rule, with a method that calibrates on dense activations or all at once."""
    config = run.config
    if config.act_rule != "threshold" or config.act_sparsity <= 0:
        return False
    return not (run.sparse_calibration and config.true_sequential)


def group_threshold(run: RunContext, inputs: Sequence[torch.Tensor], k: int) -> float | None:
    """The threshold that zeroes the target fraction of these ``[..., k]`` inputs (over every
    rank's inputs when data parallel); None when there is no input anywhere."""
    flat = torch.cat([x.reshape(-1, k).float() for x in inputs]) if inputs else torch.zeros(0, k)
    if run.dist is not None:  # a quantile is no sum: over the inputs of every rank
        flat = run.dist.gather_rows(flat)
    if not flat.numel():
        return None
    return calibrate_threshold(flat, run.config.act_sparsity)


def calibrate_groups(
    run: RunContext,
    block: nn.Module,
    groups: Sequence[Group],
    linears: dict[str, nn.Module],
    full: dict[str, str],
    sparsifier: ActivationSparsifier,
    stream: Sequence[torch.Tensor],
    extras: Sequence[BlockCall],
) -> None:
    """Calibrate the thresholds of a block's plain groups in order, each on its own input with
    the activation sparsity of every layer before it on.

    The sparsifier must be attached to the block's layers and enabled; it learns each group's
    threshold before the next group's input is captured. Routed groups keep theirs.

    Args:
        run: the run (``run.thresholds`` receives the thresholds by full name).
        block: the block, on the device.
        groups: the block's groups, in forward order.
        linears: the block's layers by name.
        full: each layer's full name in the model.
        sparsifier: the block's sparsifier (threshold rule, keyed by the names in ``linears``).
        stream: the block's input hidden states, one tensor per batch.
        extras: what the model passes the block besides the hidden states, per batch.
    """
    place = run.place
    for group in groups:
        if group.routed:
            continue
        run.check_cancel()
        head = group.names[0]
        store: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad(), capture_inputs({head: linears[head]}, store, stop_after=head):
            for b, states in enumerate(stream):
                run_until(block, place.fetch(states), place.fetch_call(extras[b]))
        threshold = group_threshold(run, store.get(head, []), in_features(linears[head]))
        del store
        if threshold is None:
            continue
        for name in group.names:
            run.thresholds[full[name]] = threshold
            sparsifier.thresholds[name] = threshold


def recalibrate(
    run: RunContext, model: nn.Module, adapter: ModelAdapter, batches: Sequence[torch.Tensor]
) -> Iterator[Event]:
    """Calibrate every plain group's threshold on the pruned model with activation sparsity on.

    Args:
        run: the run, after pruning (its thresholds are replaced, routed experts' kept).
        model: the pruned model.
        adapter: the model's family adapter.
        batches: the calibration token batches this process holds (its shard when data
            parallel).

    Yields:
        :class:`Progress` per block (phase ``calibrate``) and a closing :class:`Note` with how
        much the thresholds moved.
    """
    config = run.config
    tick = time.monotonic()
    run.phase = "while calibrating the activation thresholds"
    place = run.place
    blocks = adapter.blocks(model)
    before = dict(run.thresholds)
    hidden, calls = capture_stack_inputs(model, blocks, list(batches))
    stream = [place.keep(h) for h in hidden]
    del hidden
    calls = place.keep_calls(calls)
    label = "activation thresholds on the pruned model"
    yield Progress(t=run.t(), phase="calibrate", done=0, total=len(blocks), label=label)
    for index, block in enumerate(blocks):
        run.check_cancel()
        linears = adapter.linears(block)
        full = {name: f"{adapter.prefix(index)}{name}" for name in linears}
        sparsifier = ActivationSparsifier(
            config.act_sparsity,
            "threshold",
            {name: run.thresholds[f] for name, f in full.items() if f in run.thresholds},
        )
        place.block_in(block)
        sparsifier.attach(linears)
        try:
            groups = adapter.block_groups(index)
            calibrate_groups(run, block, groups, linears, full, sparsifier, stream, calls[index])
            last = index == len(blocks) - 1  # nothing reads the stream after the last block
            with torch.no_grad():
                for b, states in enumerate([] if last else stream):
                    out = run_block(block, place.fetch(states), place.fetch_call(calls[index][b]))
                    stream[b] = place.keep(out)
                    del out
        finally:
            sparsifier.detach()
            place.block_home(block)
        yield Progress(t=run.t(), phase="calibrate", done=index + 1, total=len(blocks), label=label)
    del stream
    run.timings["forward"] += time.monotonic() - tick
    yield Note(t=run.t(), text=describe(before, run.thresholds, time.monotonic() - tick))


def describe(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """One line on the recalibration: how many thresholds and how far they moved."""
    moved = [
        after[name] / before[name] - 1
        for name in after
        if name in before and before[name] > 0 and after[name] != before[name]
    ]
    text = (
        "activation thresholds calibrated on the pruned model with the activation sparsity of "
        f"every upstream layer on ({len(after)} layers, {seconds:.1f} s)"
    )
    if moved:
        text += (
            f": against the thresholds seen while pruning, median {statistics.median(moved):+.1%}"
            f", range {min(moved):+.1%} to {max(moved):+.1%}"
        )
    return text
