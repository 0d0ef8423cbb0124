"""Scripted event sources and fixed catalogs for the TUI tests (no torch work).

:func:`scripted_events` is a deterministic run of a small LLaMA-like model: every figure is a
function of the block and layer index, so plots, tables and reports render the same each time.
:class:`FakeSource` replays it with optional sleeps and honours the cancel token between layers,
like ``solver.run.pipeline.run``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from screens.catalog import Catalog
from solver.config import RunConfig
from solver.events import (
    BlockFinished,
    BlockStarted,
    Cancelled,
    Event,
    Finished,
    LayerSolved,
    Note,
    PerplexityMeasured,
    Progress,
    RunStarted,
)

LAYERS = (
    ("self_attn.q_proj", "q", [64, 64]),
    ("self_attn.k_proj", "k", [32, 64]),
    ("self_attn.v_proj", "v", [32, 64]),
    ("self_attn.o_proj", "o", [64, 64]),
    ("mlp.gate_proj", "gate", [128, 64]),
    ("mlp.up_proj", "up", [128, 64]),
    ("mlp.down_proj", "down", [64, 128]),
)
"""The seven prunable layers of a block: name, type, shape."""

CATALOG = Catalog(
    models={"smollm2-135m": "SmolLM2-135M (built-in)", "tiny-random": "tiny random LLaMA"},
    cached_models=(),
    texts={
        "sotu": "State of the Union addresses",
        "moby-dick": "Moby-Dick",
        "wikitext2": "WikiText-2",
        "c4": "C4",
    },
    devices=("auto", "cpu"),
)
"""A fixed catalog, so pictures do not depend on the machine's hub cache or GPU."""


def scripted_events(
    config: RunConfig | None = None,
    n_blocks: int = 4,
    model: str = "scripted-llama",
    scale: float = 1.0,
) -> Iterator[Event]:
    """A complete, deterministic run (without the terminal event's dependence on the clock).

    Args:
        config: the run's configuration (recorded in the run-started event).
        n_blocks: decoder blocks.
        model: the model's name.
        scale: multiplies the reconstruction errors and the pruned perplexity (to tell runs apart).
    """
    config = config or RunConfig(model=model)
    w = config.target_weight_sparsity
    x = config.act_sparsity
    t = 0.0
    yield Progress(t=t, phase="load", done=1, total=1, label="loading the model")
    t += 0.5
    yield RunStarted(
        t=t,
        config=config.to_dict(),
        model=model,
        family="llama",
        device="cpu",
        dtype="float32",
        n_blocks=n_blocks,
        n_layers=n_blocks * len(LAYERS),
        n_params=1_000_000,
        n_prunable_params=n_blocks * 40_960,
        versions={"python": "3.11", "torch": "2.13", "transformers": "5.24"},
        calib={"source": config.calib, "samples": config.nsamples, "seqlen": config.seqlen},
        host={"cpus": 2},
    )
    yield PerplexityMeasured(
        t=t, label="dense", ppl=40.0, text=config.eval, windows=4, seqlen=32, block=-1
    )
    yield PerplexityMeasured(
        t=t,
        label="dense_act",
        ppl=52.0,
        text=config.eval,
        windows=4,
        seqlen=32,
        act_sparsity=x,
        block=-1,
    )
    yield Note(t=t, level="info", text="calibrating on 4 x 32 tokens")
    for block in range(n_blocks):
        yield BlockStarted(t=t, block=block, n_blocks=n_blocks)
        for index, (name, kind, shape) in enumerate(LAYERS):
            t += 0.25
            yield Progress(
                t=t, phase="prune", done=block * 7 + index, total=n_blocks * 7, label=name
            )
            error = scale * 10 ** (-3 + 0.3 * index - 0.2 * block)
            histogram = [0, 1, 3 + index, 20 + block, 8, 2, 0, 0]
            yield LayerSolved(
                t=t,
                block=block,
                name=name,
                layer_type=kind,
                shape=list(shape),
                weight_sparsity=w,
                act_sparsity=x - 0.01 * index,
                error_before=error * 0.1,
                error_after=error,
                seconds=0.25,
                histogram=histogram,
                histogram_edges=[i / 8 for i in range(9)],
                damping=0.01,
                retries=0,
            )
        yield BlockFinished(
            t=t,
            block=block,
            seconds=1.75,
            weight_sparsity=w,
            act_sparsity=x - 0.03,
            peak_memory_mb=512.0,
            timings={"forward": 0.5, "statistics": 0.5, "solve": 0.75},
        )
        if config.proxy_every and (block + 1) % config.proxy_every == 0:
            yield PerplexityMeasured(
                t=t,
                label="proxy",
                ppl=52.0 + 10 * scale * (block + 1),
                text=config.eval,
                windows=2,
                seqlen=32,
                act_sparsity=x,
                block=block,
            )
    if n_blocks > 1:
        yield Note(t=t, level="warning", text="block 1: damping raised once for mlp.down_proj")
    yield Progress(t=t, phase="eval", done=0, total=4, label="pruned")
    t += 1.0
    yield PerplexityMeasured(
        t=t,
        label="pruned",
        ppl=60.0 * scale,
        text=config.eval,
        windows=4,
        seqlen=32,
        act_sparsity=x,
        block=-1,
    )
    yield Finished(
        t=t,
        seconds=t,
        weight_sparsity=w,
        act_sparsity=x - 0.03,
        peak_memory_mb=512.0,
        model_dir="",
        timings={"load": 0.5, "solve": t - 1.5, "eval": 1.0},
    )


class FakeSource:
    """An event source like ``solver.run.pipeline.run``, replaying :func:`scripted_events`.

    Attributes:
        delay: seconds to sleep before each layer (keeps the run going while a test acts).
        n_blocks: decoder blocks of the scripted model.
        pause_at: the block before which the source waits for ``gate`` (None: never);
            ``-1``: the final evaluation (after every block).
        gate: set by the test to let a paused source go on.
        calls: the ``(config, workdir)`` of each call.
    """

    def __init__(self, delay: float = 0.0, n_blocks: int = 4, pause_at: int | None = None) -> None:
        """Configure the replay."""
        self.delay = delay
        self.n_blocks = n_blocks
        self.pause_at = pause_at
        self.gate = threading.Event()
        self.calls: list[tuple[RunConfig, Path | None]] = []

    def __call__(
        self, config: RunConfig, cancel: Any = None, workdir: Path | None = None
    ) -> Iterator[Event]:
        """Yield the scripted run; stop with a cancelled event when ``cancel`` is set."""
        self.calls.append((config, workdir))
        block = -1
        for event in scripted_events(config, n_blocks=self.n_blocks):
            if isinstance(event, BlockStarted):
                block = event.block
                if block == self.pause_at:
                    self.gate.wait(30)
            final_eval = isinstance(event, PerplexityMeasured) and event.label == "pruned"
            if final_eval and self.pause_at == -1:
                self.gate.wait(30)
            if isinstance(event, LayerSolved) and self.delay:
                time.sleep(self.delay)
            stop_point = isinstance(event, LayerSolved | BlockStarted | Finished) or final_eval
            if cancel is not None and cancel.is_set() and stop_point:
                reason = "cancelled by the user"
                if final_eval or isinstance(event, Finished):
                    reason = "cancelled during the evaluation of the pruned model"
                yield Cancelled(t=event.t, block=block, reason=reason)
                return
            yield event
