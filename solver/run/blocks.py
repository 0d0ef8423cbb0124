"""The walk over the decoder blocks with two streams of calibration hidden states.

ALGORITHM.md §6. The *dense* stream (original weights, dense activations) gives each layer's
``X~``; the *compressed* stream (pruned upstream blocks and the method's activation sparsity)
gives ``X^``. Inside a block the layers are pruned in "true sequential" groups that share an
input (:mod:`solver.run.layers`), so each group is calibrated on inputs that already reflect the
pruning of the groups before it. After every block the streams may be checkpointed and a proxy
perplexity measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from solver.errors import RunError
from solver.events import BlockFinished, BlockStarted, Event, LayerSolved, Note
from solver.io import checkpoint, system
from solver.math.activations import ActivationSparsifier
from solver.run import estimate, layers, routed, thresholds
from solver.run.adapters import ModelAdapter
from solver.run.capture import (
    BlockCall,
    capture_inputs,
    capture_stack_inputs,
    run_block,
    run_until,
)
from solver.run.context import RunContext
from solver.run.discovery import Group, in_features, layer_weight
from solver.run.measure import evaluate


def prune(
    run: RunContext,
    model: nn.Module,
    adapter: ModelAdapter,
    calib: torch.Tensor,
    windows: torch.Tensor | None,
    protocol: dict[str, Any],
    checkpoint_dir: Path | None = None,
    saved: checkpoint.Checkpoint | None = None,
) -> Iterator[Event]:
    """Walk the decoder blocks with the two streams and prune each block's layers.

    Args:
        run: the run.
        model: the model (blocks are moved to the run's device one at a time; the streams live
            where the run's placement says, :mod:`solver.run.offload`).
        adapter: the model's family adapter.
        calib: ``[nsamples, seqlen]`` calibration tokens.
        windows: evaluation windows for the proxy perplexity (None: no proxy).
        protocol: the evaluation protocol.
        checkpoint_dir: where each finished block is checkpointed (None: nowhere).
        saved: a checkpoint to resume from: the streams come from it and pruning starts after
            its block.
    """
    config = run.config
    blocks = adapter.blocks(model)
    batches = list(torch.split(calib, config.batch_size))
    checkpoints = checkpoint_dir is not None
    if run.dist is not None:  # data parallel: this rank's shard of the batches
        batches = run.dist.shard(batches)
        # rank 0 alone writes the checkpoints, with the streams of every rank
        checkpoints = run.dist.agree(checkpoints, run.device)
        if run.dist.rank != 0:
            checkpoint_dir = None
    tick = time.monotonic()
    run.phase = "while capturing the calibration inputs"
    place = run.place
    hidden, calls = capture_stack_inputs(model, blocks, batches)  # in host memory
    if saved is None:
        first = 0
        dense = [place.keep(h) for h in hidden]
        compressed = [place.keep(h.clone()) for h in hidden]
    else:
        first = saved.block + 1
        saved_dense, saved_compressed = saved.dense, saved.compressed
        if run.dist is not None:  # the checkpoint holds every batch: this rank's shard
            saved_dense, saved_compressed = (
                run.dist.mine(saved_dense),
                run.dist.mine(saved_compressed),
            )
        dense = [place.keep(h) for h in saved_dense]
        compressed = [place.keep(h) for h in saved_compressed]
    del hidden
    calls = place.keep_calls(calls)
    run.timings["forward"] += time.monotonic() - tick
    hidden_size = int(dense[0].shape[-1])
    cache_mb = cache_megabytes(adapter, blocks[0], calib.numel())
    widest = max(in_features(m) for m in adapter.linears(blocks[0]).values())
    run.need = estimate.block_memory(
        int(calib.shape[0]), int(calib.shape[1]), config.batch_size, hidden_size, widest
    )
    where = " in host memory" if place.offloads else ""
    yield Note(
        t=run.t(),
        text=(
            f"calibration: {calib.shape[0]} x {calib.shape[1]} tokens; two streams of "
            f"{2 * calib.numel() * hidden_size * 4 / 2**20:.1f} MB, cached dense layer inputs "
            f"{cache_mb:.1f} MB per block{where}"
        ),
    )
    thin = thin_calibration(run, adapter, blocks[0], calib)
    if thin:
        yield Note(t=run.t(), level="warning", text=thin)
    for index, block in enumerate(blocks):
        if index < first:
            continue
        run.check_cancel()
        run.block = index
        run.phase = "while pruning"
        yield from prune_block(
            run, index, len(blocks), block, adapter, dense, compressed, calls[index]
        )
        if checkpoints:
            streams = (dense, compressed)
            if run.dist is not None:
                streams = (run.dist.gather_batches(dense), run.dist.gather_batches(compressed))
            if checkpoint_dir is not None:
                checkpoint.save_block(
                    checkpoint_dir,
                    index,
                    adapter.linears(block),
                    *streams,
                    run.thresholds,
                    run.timings,
                    elapsed=time.monotonic() - run.start,
                )
        every = config.proxy_every
        if windows is not None and every and (index + 1) % every == 0 and index + 1 < len(blocks):
            proxy = windows[: config.proxy_windows]
            yield from evaluate(run, model, adapter, proxy, protocol, "proxy", upto_block=index)
    del dense, compressed
    if thresholds.needs_recalibration(run):
        yield from thresholds.recalibrate(run, model, adapter, batches)


def thin_calibration(
    run: RunContext, adapter: ModelAdapter, block: nn.Module, calib: torch.Tensor
) -> str:
    """The thin-calibration warning for the widest layer (issue 9), or ``""``.

    Only a method that reads the full Hessian is warned: its ``k x k`` estimate is what thin
    calibration spoils.
    """
    if not run.method.reads.hessian:
        return ""
    name, layer = max(adapter.linears(block).items(), key=lambda item: in_features(item[1]))
    return estimate.thin_calibration(
        int(calib.numel()), int(calib.shape[1]), name, in_features(layer)
    )


def cache_megabytes(adapter: ModelAdapter, block: nn.Module, tokens: int) -> float:
    """Memory for one block's cached dense inputs (one tensor per group; the experts module's
    input once for its routed groups)."""
    linears = adapter.linears(block)
    features = 0
    seen: set[str] = set()
    for group in adapter.block_groups(adapter.index(block)):
        key = group.experts or group.names[0]
        if key not in seen:
            seen.add(key)
            features += in_features(linears[group.names[0]])
    return tokens * features * 4 / 2**20


def prune_block(
    run: RunContext,
    index: int,
    n_blocks: int,
    block: nn.Module,
    adapter: ModelAdapter,
    dense: list[torch.Tensor],
    compressed: list[torch.Tensor],
    extras: list[BlockCall],
) -> Iterator[Event]:
    """Prune one decoder block; updates both streams in place.

    Args:
        run: the run.
        index: the block's index.
        n_blocks: how many blocks the model has.
        block: the block.
        adapter: the model's adapter (the block's groups).
        dense: the dense stream, one ``[batch, seqlen, hidden]`` tensor per batch (on the device,
            or in host memory when offloading: each batch is fetched for its pass).
        compressed: the compressed stream, likewise.
        extras: what the model passes this block besides the hidden states, per batch.
    """
    config = run.config
    tick_block = time.monotonic()
    timings = dict.fromkeys(("forward", "statistics", "solve"), 0.0)
    yield BlockStarted(t=run.t(), block=index, n_blocks=n_blocks)
    place = run.place
    place.block_in(block)
    linears = adapter.linears(block)
    block_groups = adapter.block_groups(index)
    full = {name: f"{adapter.prefix(index)}{name}" for name in linears}
    firsts = _heads(block, block_groups, linears)
    sparsifier = ActivationSparsifier(
        config.act_sparsity if config.act_sparsity > 0 else 0.0,
        config.act_rule,
        {name: run.thresholds[f] for name, f in full.items() if f in run.thresholds},
    )
    sparsifier.attach(linears if config.act_sparsity > 0 else {})
    solved: list[LayerSolved] = []
    saved = routed.originals(block, block_groups)
    try:
        # 1. dense pass: X~ for every group, and the next dense stream
        tick = time.monotonic()
        sparsifier.enabled = False
        dense_inputs: dict[str, list[torch.Tensor]] = {}
        # offloading: the routed experts' inputs stay on the device (their hooks index them)
        routed_heads = [g.experts for g in block_groups if g.routed]
        with torch.no_grad(), capture_inputs(firsts, dense_inputs):
            for b, states in enumerate(dense):
                out = run_block(block, place.fetch(states), place.fetch_call(extras[b]))
                dense[b] = place.keep(out)
                place.keep_last(dense_inputs, skip=routed_heads)
                del out
        timings["forward"] += time.monotonic() - tick
        # 2. compressed passes, group by group (true sequential) or all at once
        sparsifier.enabled = run.sparse_calibration
        if run.sparse_calibration and config.act_rule == "threshold" and not config.true_sequential:
            # all at once: every group's threshold before the one statistics pass that uses them
            thresholds.calibrate_groups(
                run, block, block_groups, linears, full, sparsifier, compressed, extras
            )
        group_sets = [[g] for g in block_groups] if config.true_sequential else [list(block_groups)]
        for groups in group_sets:
            run.check_cancel()
            tick = time.monotonic()
            raw: dict[str, list[torch.Tensor]] = {}
            record = routed.Routed()
            plain = [g for g in groups if not g.routed]
            heads = {g.names[0]: linears[g.names[0]] for g in plain}
            last = groups[-1]
            stop = last.names[0] if config.true_sequential and not last.routed else ""
            with (
                torch.no_grad(),
                capture_inputs(heads, raw, stop_after=stop),
                routed.capture_routed(
                    block,
                    [g for g in groups if g.routed],
                    record,
                    dense_inputs,
                    saved,
                    stop=config.true_sequential and last.routed,
                ),
            ):
                for b, states in enumerate(compressed):
                    run_until(block, place.fetch(states), place.fetch_call(extras[b]))
                    place.keep_last(raw)
            timings["forward"] += time.monotonic() - tick
            if run.dist is not None:  # an expert slice's method depends on all its tokens
                names = [name for g in groups if g.routed for name in g.names]
                if names:
                    counts = [record.tokens.get(name, 0) for name in names]
                    totals = run.dist.sum_counts(counts, run.device)
                    record.tokens.update(zip(names, totals, strict=True))
            for group in groups:
                if group.routed:
                    events: Iterator[Event] = routed.prune_experts(
                        run, index, group, linears, full, record, timings
                    )
                else:
                    head = group.names[0]
                    events = layers.prune_group(
                        run, index, group.names, linears, full, raw[head], dense_inputs[head],
                        timings,
                    )  # fmt: skip
                for event in events:
                    if isinstance(event, LayerSolved):
                        solved.append(event)
                    yield event
                sparsifier.thresholds.update(
                    {n: run.thresholds[full[n]] for n in group.names if full[n] in run.thresholds}
                )
                if not group.routed:
                    del raw[group.names[0]]
        # 3. the compressed stream moves past the pruned block
        run.check_cancel()
        tick = time.monotonic()
        with torch.no_grad():
            for b, states in enumerate(compressed):
                out = run_block(block, place.fetch(states), place.fetch_call(extras[b]))
                compressed[b] = place.keep(out)
                del out
        timings["forward"] += time.monotonic() - tick
    finally:
        sparsifier.detach()
        place.block_out(block)
    del saved
    run.layer_act.extend(e.act_sparsity for e in solved)
    for part, seconds in timings.items():
        run.timings[part] += seconds
    check_health(index, dense, compressed)
    zeros = sum(int((layer_weight(m) == 0).sum()) for m in linears.values())
    total = sum(layer_weight(m).numel() for m in linears.values())
    yield BlockFinished(
        t=run.t(),
        block=index,
        seconds=round(time.monotonic() - tick_block, 4),
        weight_sparsity=zeros / max(total, 1),
        act_sparsity=sum(e.act_sparsity for e in solved) / max(len(solved), 1),
        peak_memory_mb=system.peak_memory_mb(run.device),
        timings={k: round(v, 4) for k, v in timings.items()},
    )


def _heads(
    block: nn.Module, groups: tuple[Group, ...], linears: dict[str, nn.Module]
) -> dict[str, nn.Module]:
    """The modules whose input is each group's dense input: the first layer of a group that
    shares one input, the experts module of routed groups."""
    heads: dict[str, nn.Module] = {}
    for group in groups:
        if group.routed:
            heads[group.experts] = block.get_submodule(group.experts)
        else:
            heads[group.names[0]] = linears[group.names[0]]
    return heads


def check_health(
    index: int, dense: Sequence[torch.Tensor], compressed: Sequence[torch.Tensor]
) -> None:
    """Stop the run when a stream holds NaN or Inf after block ``index``.

    Raises:
        RunError: naming the block and the stream.
    """
    for name, stream in (("dense", dense), ("compressed", compressed)):
        if not all(bool(torch.isfinite(s).all()) for s in stream):
            raise RunError(
                f"block {index}: the {name} stream holds NaN/Inf after the block; the model "
                "overflows in its dtype — load it in float32 or lower the sparsity"
            )
