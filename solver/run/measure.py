"""Perplexity and task accuracy measured during a run, as events (ALGORITHM.md §7).

The dense model before pruning (with and without activation sparsity), a cheap proxy after
every few blocks, and the pruned model at the end: each is one :class:`PerplexityMeasured`
event carrying its protocol, with :class:`Progress` events while it runs. With ``--tasks``, the
dense model (before pruning) and the pruned model (with the run's activation sparsity) are also
scored on zero-shot tasks: one :class:`TasksMeasured` event each. With several ranks
(:mod:`solver.run.distributed`) only rank 0 measures the pruned model: every rank holds the same
model, and that last measurement comes after the ranks' last exchange. The measurements before
and during pruning are repeated on every rank, so that no rank waits for another's (a wait in
an exchange is bounded by :data:`~solver.run.distributed.TIMEOUT_S`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from solver.events import Event, PerplexityMeasured, Progress, TasksMeasured
from solver.math.activations import ActivationSparsifier
from solver.run.adapters import ModelAdapter
from solver.run.context import RunContext
from solver.run.perplexity import perplexity_steps

PHASES = {
    "dense": "during the dense evaluation",
    "dense_act": "during the dense evaluation with activation sparsity",
    "pruned": "during the evaluation of the pruned model",
}
"""Where the run is while measuring each label (a proxy says its block instead)."""


def evaluate(
    run: RunContext,
    model: nn.Module,
    adapter: ModelAdapter,
    windows: torch.Tensor,
    protocol: dict[str, Any],
    label: str,
    *,
    sparse: bool = True,
    upto_block: int | None = None,
) -> Iterator[Event]:
    """Perplexity of the model now; with the run's activation sparsity if ``sparse``.

    Args:
        run: the run.
        model: the model (on the run's device for the evaluation, as a whole or block by block
            as ``--offload`` says, then back to CPU).
        adapter: the model's family adapter.
        windows: ``[W, S]`` evaluation token windows.
        protocol: the evaluation protocol (its ``text`` goes into the event).
        label: ``dense``, ``dense_act``, ``pruned`` or ``proxy``.
        sparse: apply the run's activation sparsity.
        upto_block: for a proxy, the last pruned block: only blocks up to it are sparsified.

    Raises:
        RunCancelled: the cancel token was set between two batches.
    """
    if label == "pruned" and run.dist is not None and run.dist.rank != 0:  # rank 0's alone
        return
    tick = time.monotonic()
    run.phase = PHASES.get(label, f"during the {label} evaluation after block {upto_block}")
    linears = adapter.all_linears(model)
    if upto_block is not None:
        prefixes = tuple(adapter.prefix(i) for i in range(upto_block + 1))
        linears = {k: v for k, v in linears.items() if k.startswith(prefixes)}
    p_x = run.config.act_sparsity if sparse else 0.0
    sparsifier = ActivationSparsifier(p_x, run.config.act_rule, dict(run.thresholds))
    total = int(windows.shape[0])
    yield Progress(t=run.t(), phase="eval", done=0, total=total, label=label)
    with run.place.evaluating(model, adapter.blocks(model)):
        with sparsifier.attach(linears if p_x > 0 else {}):
            steps = perplexity_steps(
                model,
                windows,
                device=run.device,
                batch_size=run.config.batch_size,
                cancel=run.cancel,
            )
            while True:  # the windows done, as they are done (the status bar follows them)
                try:
                    done, _ = next(steps)
                except StopIteration as finished:
                    ppl = float(finished.value)
                    break
                yield Progress(t=run.t(), phase="eval", done=done, total=total, label=label)
        measured = sparsifier.mean_measured() if p_x > 0 else 0.0
    if label == "pruned":
        run.eval_act = float(measured)
    seconds = time.monotonic() - tick
    run.timings["eval"] += seconds
    yield PerplexityMeasured(
        t=run.t(),
        label=label,
        ppl=float(ppl),
        text=str(protocol.get("text", "")),
        windows=total,
        seqlen=int(windows.shape[1]),
        act_sparsity=float(measured),
        block=-1 if upto_block is None else upto_block,
        seconds=round(seconds, 3),
        protocol=_protocol_of(protocol, total),
    )


def _protocol_of(protocol: dict[str, Any], count: int) -> dict[str, Any]:
    """The protocol of the first ``count`` of its windows (a proxy evaluates fewer)."""
    if not protocol or count == protocol.get("windows", count):
        return dict(protocol)
    seqlen = int(protocol.get("seqlen", 0))
    spans = list(protocol.get("token_spans", []))[:count]
    return {**protocol, "windows": count, "tokens": count * seqlen, "token_spans": spans}


def evaluate_tasks(
    run: RunContext,
    model: nn.Module,
    adapter: ModelAdapter,
    tokenizer: Any,
    label: str,
    *,
    sparse: bool = True,
) -> Iterator[Event]:
    """Zero-shot accuracy of the model now on the run's ``--tasks`` (one :class:`TasksMeasured`).

    The same model object (on the run's device as ``--offload`` says, then back to CPU) and,
    if ``sparse``, the same activation-sparsity hooks as the perplexity evaluation.

    Args:
        run: the run (its config names the tasks and the limit).
        model: the model.
        adapter: the model's family adapter.
        tokenizer: the model's tokenizer.
        label: ``dense`` or ``pruned``.
        sparse: apply the run's activation sparsity.
    """
    from solver.run.tasks import parse_tasks, run_tasks

    names = parse_tasks(run.config.tasks)
    if not names or (label == "pruned" and run.dist is not None and run.dist.rank != 0):
        return
    tick = time.monotonic()
    run.phase = f"during the zero-shot tasks of the {label} model"
    run.check_cancel()
    yield Progress(t=run.t(), phase="tasks", done=0, total=len(names), label=label)
    p_x = run.config.act_sparsity if sparse else 0.0
    sparsifier = ActivationSparsifier(p_x, run.config.act_rule, dict(run.thresholds))
    linears = adapter.all_linears(model)
    with run.place.evaluating(model, adapter.blocks(model)):
        with sparsifier.attach(linears if p_x > 0 else {}):
            scores = run_tasks(
                model,
                tokenizer,
                names,
                limit=run.config.task_limit,
                batch_size=run.config.batch_size,
            )
        measured = sparsifier.mean_measured() if p_x > 0 else 0.0
    seconds = time.monotonic() - tick
    run.timings["eval"] += seconds
    yield Progress(t=run.t(), phase="tasks", done=len(names), total=len(names), label=label)
    yield TasksMeasured(
        t=run.t(),
        label=label,
        tasks=scores,
        limit=run.config.task_limit,
        act_sparsity=float(measured),
        seconds=round(seconds, 3),
    )
