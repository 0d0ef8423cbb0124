"""One group of layers that share an input: its calibration statistics, then each layer's solve.

ALGORITHM.md §6 step 2.3: the statistics ``H``, ``G`` and ``g`` of a group are accumulated from
the compressed stream's inputs ``X^`` (activation-sparse when the method calibrates on them) and
the dense stream's ``X~``; then every layer of the group is pruned in place by the run's method
(:mod:`solver.run.methods`) and described by one :class:`LayerSolved` event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from solver.errors import RunError
from solver.events import LayerSolved
from solver.math.masks import row_density_histogram
from solver.math.obc import layer_errors
from solver.math.speedup import layer_decode_costs
from solver.math.stats import LayerStats
from solver.run.adapters import layer_type
from solver.run.alpha import Selection, SplitStats, selects_alpha
from solver.run.context import RunContext
from solver.run.discovery import in_features, layer_weight
from solver.run.methods import Method
from solver.run.thresholds import group_threshold


def prune_group(
    run: RunContext,
    index: int,
    group: Sequence[str],
    linears: dict[str, nn.Module],
    full: dict[str, str],
    raw: list[torch.Tensor],
    dense_inputs: list[torch.Tensor],
    timings: dict[str, float],
    *,
    method: Method | None = None,
) -> Iterator[LayerSolved]:
    """Statistics for one group of layers sharing an input, then each layer's solve.

    Args:
        run: the run.
        index: the block's index.
        group: the group's layer names within the block; the first one's input is the group's.
        linears: the block's layers by name.
        full: each layer's full name in the model (``model.layers.3.mlp.up_proj``).
        raw: the group's inputs in the compressed stream, one ``[batch, tokens, k]`` per batch
            (``[tokens, k]`` for an expert slice's routed tokens); in host memory when the run
            offloads (each batch is fetched to the device for its statistics).
        dense_inputs: the same in the dense stream.
        timings: the block's seconds per part (``statistics`` and ``solve`` grow here).
        method: the method to prune with (default the run's; an expert slice with few routed
            tokens falls back to a first-order one).

    Raises:
        RunError: the statistics or a solve hold NaN/Inf (naming the block and layer).
    """
    config = run.config
    tick = time.monotonic()
    head = full[group[0]]
    method = method or run.method
    # the threshold rule: the group's threshold on these inputs, unless it was calibrated before
    # the statistics pass (all at once) or borrowed (an expert slice without tokens)
    calibrates = config.act_rule == "threshold" and config.act_sparsity > 0
    if calibrates and (raw or run.dist is not None) and head not in run.thresholds:
        threshold = group_threshold(run, raw, in_features(linears[group[0]]))
        if threshold is not None:
            for name in group:
                run.thresholds[full[name]] = threshold
    reads = method.reads
    collected = SplitStats(
        in_features(linears[group[0]]),
        run.device,
        split=reads.mismatch and selects_alpha(config),
        token_clip=config.token_clip if reads.hessian else 0.0,
    )
    for b, (x_raw, x_dense) in enumerate(zip(raw, dense_inputs, strict=True)):
        if run.dist is not None and x_raw.dim() == 3:  # sequences numbered over all ranks
            collected.first_row = run.dist.starts[b]
        x_raw, x_dense = run.place.fetch(x_raw), run.place.fetch(x_dense)  # offload: to device
        # a method with a residual calibrates on activation-sparse inputs; the others on dense
        x_sparse = run.sparsify(x_raw, head) if run.sparse_calibration else x_raw
        # the decode cost model needs the channel activity the pruned model will run with
        x_active = None
        if not run.sparse_calibration and config.act_sparsity > 0:
            x_active = run.sparsify(x_raw, head)
        x_target = x_dense  # DuoGPT's residual target, by --residual-source
        if reads.mismatch:
            x_target = residual_target(
                config.residual_source, x_sparse, x_raw, x_dense, lambda x: run.sparsify(x, head)
            )
        collected.add(x_sparse, x_target, x_active)
        del x_raw, x_dense, x_sparse, x_active, x_target
    owners: dict[str, int] = {}
    if run.dist is not None:  # data parallel: the sums of every rank, onto the layers' owners
        run.dist.cancelled(run.cancel, run.device)
        owners = run.dist.plan(group, linears)
        run.dist.reduce((collected.fit, collected.held), owners)
    stats, selection = collected.result()
    sums = (stats.H_sum, stats.G_sum, stats.D_sum)
    holds = run.dist is None or run.dist.rank in owners.values()
    if holds and not all(math.isfinite(float(v.sum())) for v in sums):
        raise RunError(
            f"block {index} {group[0]}: calibration statistics hold NaN/Inf; the model "
            "overflows in its dtype — load it in float32"
        )
    timings["statistics"] += time.monotonic() - tick

    def solve(name: str) -> LayerSolved:
        run.check_cancel()
        try:
            return solve_layer(
                run, index, name, linears[name], stats, timings, selection, method=method
            )
        except RunError as err:  # the math's own errors do not know the layer: name it
            if str(err).startswith(f"block {index} "):
                raise
            raise RunError(f"block {index} {name}: {err}") from err

    if run.dist is not None:
        yield from run.dist.solve_group(group, linears, owners, solve)
        return
    for name in group:
        yield solve(name)


def residual_target(
    source: str,
    x_sparse: torch.Tensor,
    x_raw: torch.Tensor,
    x_dense: torch.Tensor,
    sparsify: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """What DuoGPT's residual fits ``W' X^`` to, by ``--residual-source`` (``dX = target - X^``).

    * ``dense``: the dense model's input ``X~`` (ALGORITHM.md §3): the layer's own activation
      sparsity and every upstream pruning error.
    * ``local``: the compressed stream's input ``X`` before its activation sparsity: only the
      top-k's loss ``X - X^``.
    * ``upstream``: ``X^ + (X~ - X)``: only the upstream error, carried on the kept inputs; the
      layer's own top-k loss is left out of the fit.
    * ``sparse-dense``: ``sparsify(X~)``, ``X~`` with this layer's activation sparsity (the
      run's rule): the dense model with activation sparsity is the teacher.
    """
    if source == "local":
        return x_raw
    if source == "upstream":
        return x_sparse + (x_dense - x_raw)
    if source == "sparse-dense":
        return sparsify(x_dense)
    return x_dense


def solve_layer(
    run: RunContext,
    index: int,
    name: str,
    module: nn.Module,
    stats: LayerStats,
    timings: dict[str, float],
    selection: Selection | None = None,
    *,
    method: Method | None = None,
) -> LayerSolved:
    """Prune one linear layer in place with the run's method and describe the result.

    The layer's weight is solved as ``[out, in]`` (:func:`~solver.run.discovery.layer_weight`:
    a ``Conv1D``'s transposed view, an expert's slice of its fused parameter) and written back
    through the same view, so it keeps its own layout.

    Args:
        run: the run.
        index: the block's index.
        name: the layer's name within the block.
        module: the layer (its weight is replaced by the pruned one, in its own dtype).
        stats: the group's statistics over every calibration sequence.
        timings: the block's seconds per part (``solve`` grows here).
        selection: the fit and held-out statistics when alpha is chosen per layer.
        method: the method (default the run's).

    Raises:
        RunError: the pruned weights hold NaN/Inf.
    """
    tick = time.monotonic()
    weight = layer_weight(module)
    original = weight.float().contiguous()
    solution = (method or run.method).solve(original, stats, run.config, selection)
    new = solution.weight
    if not bool(torch.isfinite(new).all()):
        raise RunError(
            f"block {index} {name}: the pruned weights hold NaN/Inf; raise --damping "
            "or use more calibration samples"
        )
    seconds = time.monotonic() - tick
    timings["solve"] += seconds
    error_before, error_after = layer_errors(original, new, stats)
    weight.copy_(new.to(weight.dtype))
    counts, edges = row_density_histogram(weight)
    decode = layer_decode_costs(weight, stats.channel_activity)
    return LayerSolved(
        t=run.t(),
        block=index,
        name=name,
        layer_type=layer_type(name),
        shape=[int(weight.shape[0]), int(weight.shape[1])],
        weight_sparsity=float((weight == 0).sum()) / weight.numel(),
        act_sparsity=float(stats.act_sparsity),
        error_before=float(error_before),
        error_after=float(error_after),
        seconds=round(seconds, 4),
        histogram=counts,
        histogram_edges=edges,
        damping=float(solution.damping),
        retries=int(solution.retries),
        decode=decode,
        alpha=float(solution.alpha),
        heldout={f"{a:g}": round(e, 6) for a, e in solution.heldout.items()},
    )
