"""The in-memory event log of one run: the model that the TUI's widgets redraw from.

The App appends every solver event it receives (ARCHITECTURE.md, "The Textual side") and the
widgets read the derived views below. Nothing here imports Textual, so the views are tested as
plain functions. High-rate :class:`~solver.events.Progress` events are not stored: only the latest
one is kept (the run directory's ``events.jsonl`` keeps them all).

Widgets follow the log with a *cursor*: :attr:`EventLog.generation` changes whenever the log is
replaced (a new run, a reopened run), so a widget that drew generation ``g`` up to event ``n``
knows whether to append or to redraw from scratch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from solver.events import (
    BlockFinished,
    BlockStarted,
    Cancelled,
    Event,
    Failed,
    Finished,
    LayerSolved,
    Note,
    PerplexityMeasured,
    Progress,
    RunStarted,
    is_terminal,
)

LAYER_TYPES = ("q", "k", "v", "o", "gate", "up", "down")
"""Layer types in plotting order (a LLaMA-style decoder block)."""

ERROR_FLOOR = 1e-12
"""Smallest reconstruction error drawn on a log scale (an exact 0 would have no logarithm)."""


@dataclass
class EventLog:
    """Every event of one run, in arrival order, with cheap derived views.

    Attributes:
        events: all events except :class:`Progress`, in order.
        progress: the latest :class:`Progress` event, if any.
        generation: bumped by :meth:`reset`; widgets compare it with the one they drew.
        started: the run's :class:`RunStarted` event, once it arrived.
        layers: the :class:`LayerSolved` events, in order.
        blocks: the :class:`BlockFinished` events, in order.
        perplexities: the :class:`PerplexityMeasured` events, in order.
        terminal: the run's final event (finished, cancelled, failed), once it arrived.
        current_block: the block being pruned (-1 before the first one).
        notices: what the workbench or the run store noticed about the run, not part of its
            events (a stale lock taken over, an interrupted run), in order.
    """

    events: list[Event] = field(default_factory=list)
    progress: Progress | None = None
    generation: int = 0
    started: RunStarted | None = None
    layers: list[LayerSolved] = field(default_factory=list)
    blocks: list[BlockFinished] = field(default_factory=list)
    perplexities: list[PerplexityMeasured] = field(default_factory=list)
    terminal: Event | None = None
    current_block: int = -1
    notices: list[str] = field(default_factory=list)

    def reset(self, events: Iterable[Event] = (), notices: Iterable[str] = ()) -> None:
        """Forget everything (a new run starts or another run is opened), then add ``events``.

        Args:
            events: the run's events so far.
            notices: the run's notices so far (see :attr:`notices`).
        """
        self.events = []
        self.notices = list(notices)
        self.progress = None
        self.started = None
        self.layers = []
        self.blocks = []
        self.perplexities = []
        self.terminal = None
        self.current_block = -1
        self.generation += 1
        self.extend(events)

    def add_notice(self, text: str) -> None:
        """Add one notice (see :attr:`notices`)."""
        self.notices.append(text)

    def extend(self, events: Iterable[Event]) -> None:
        """Append several events in order."""
        for event in events:
            self.append(event)

    def append(self, event: Event) -> None:
        """Add one event and update the derived views."""
        if isinstance(event, Progress):
            self.progress = event
            return
        self.events.append(event)
        if isinstance(event, RunStarted):
            self.started = event
        elif isinstance(event, BlockStarted):
            self.current_block = event.block
        elif isinstance(event, LayerSolved):
            self.layers.append(event)
            self.current_block = event.block
        elif isinstance(event, BlockFinished):
            self.blocks.append(event)
        elif isinstance(event, PerplexityMeasured):
            self.perplexities.append(event)
        elif is_terminal(event):
            self.terminal = event

    # ----------------------------------------------------------------------------- status

    @property
    def status(self) -> str:
        """``empty``, ``running``, ``finished``, ``cancelled`` or ``failed``."""
        if self.terminal is not None:
            return self.terminal.kind
        return "running" if self.events or self.progress else "empty"

    @property
    def n_blocks(self) -> int:
        """Decoder blocks in the model (0 until the run started)."""
        return self.started.n_blocks if self.started else 0

    @property
    def n_layers(self) -> int:
        """Prunable layers in the model (0 until the run started)."""
        return self.started.n_layers if self.started else 0

    @property
    def elapsed(self) -> float:
        """Seconds from the run's start to its latest event (from event times only)."""
        times = [e.t for e in self.events[-1:]]
        if self.progress is not None:
            times.append(self.progress.t)
        return max(times, default=0.0)

    @property
    def notes(self) -> list[Note]:
        """The notes and warnings, in order."""
        return [e for e in self.events if isinstance(e, Note)]

    def eta_seconds(self) -> float | None:
        """Seconds of pruning left, from the mean time per solved layer; None when unknown."""
        if self.terminal is not None or not self.layers or not self.n_layers:
            return None
        first_block = next((e for e in self.events if isinstance(e, BlockStarted)), None)
        start = first_block.t if first_block else 0.0
        spent = max(self.layers[-1].t - start, 0.0)
        left = max(self.n_layers - len(self.layers), 0)
        return spent / len(self.layers) * left

    def activity(self) -> str:
        """One line on what the run is doing now (phase, block, layer) or how it ended."""
        terminal = self.terminal
        if isinstance(terminal, Finished):
            return f"finished in {format_seconds(terminal.seconds)}"
        if isinstance(terminal, Cancelled):
            where = f" in block {terminal.block}" if terminal.block >= 0 else ""
            return f"cancelled{where}: {terminal.reason}"
        if isinstance(terminal, Failed):
            return f"failed: {terminal.error}"
        progress = self.progress
        if progress is not None and (not self.events or progress.t >= self.events[-1].t):
            label = f" · {progress.label}" if progress.label else ""
            if progress.phase == "prune" and self.current_block >= 0 and self.n_blocks:
                return f"block {self.current_block + 1}/{self.n_blocks}{label}"
            count = f" {progress.done}/{progress.total}" if progress.total else ""
            return f"{progress.phase}{count}{label}"
        last_event = self.events[-1] if self.events else None
        if isinstance(last_event, BlockStarted):
            return f"block {last_event.block + 1}/{self.n_blocks} · collecting statistics"
        if self.layers:
            last = self.layers[-1]
            return f"block {last.block + 1}/{self.n_blocks} · solved {last.name}"
        if self.started is not None:
            return f"pruning {self.started.model} on {self.started.device}"
        return "waiting for the run to start" if self.events else "no run yet"

    # ----------------------------------------------------------------------------- plots

    def errors_by_type(self) -> dict[str, tuple[list[int], list[float]]]:
        """Reconstruction error after pruning, one point per solved layer, split by layer type.

        Returns:
            ``{layer_type: (layer indices, errors)}`` with the types in :data:`LAYER_TYPES`
            order first; errors are clamped to :data:`ERROR_FLOOR` for a log scale.
        """
        series: dict[str, tuple[list[int], list[float]]] = {}
        for index, layer in enumerate(self.layers):
            kind = layer.layer_type or layer.name.rsplit(".", 1)[-1]
            xs, ys = series.setdefault(kind, ([], []))
            xs.append(index)
            ys.append(max(float(layer.error_after), ERROR_FLOOR))
        order = {name: i for i, name in enumerate(LAYER_TYPES)}
        return dict(sorted(series.items(), key=lambda item: order.get(item[0], len(order))))

    def latest_histogram(self) -> tuple[str, list[float], list[int]]:
        """Per-row weight density histogram of the latest solved layer.

        Returns:
            ``(title, bin centres, counts)``; empty lists before the first layer.
        """
        for layer in reversed(self.layers):
            if layer.histogram:
                edges = list(layer.histogram_edges)
                if len(edges) != len(layer.histogram) + 1:
                    n = len(layer.histogram)
                    edges = [i / n for i in range(n + 1)]
                centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
                return f"block {layer.block} {layer.name}", centres, list(layer.histogram)
        return "", [], []

    def block_sparsity(self) -> tuple[list[int], list[float], list[float]]:
        """Achieved weight and activation sparsity per finished block: ``(blocks, w, x)``."""
        blocks = [b.block for b in self.blocks]
        return (
            blocks,
            [b.weight_sparsity for b in self.blocks],
            [b.act_sparsity for b in self.blocks],
        )

    def perplexity_refs(self) -> dict[str, float]:
        """The latest reference perplexity per label (``dense``, ``dense_act``, ``pruned``)."""
        return {p.label: p.ppl for p in self.perplexities if p.label != "proxy"}

    def proxy_points(self) -> tuple[list[int], list[float]]:
        """Proxy perplexity points measured during the run: ``(block, ppl)``."""
        points = [p for p in self.perplexities if p.label == "proxy"]
        return [p.block for p in points], [p.ppl for p in points]


def format_seconds(seconds: float | None) -> str:
    """``75.0`` -> ``1m15s``; ``None`` -> ``?``."""
    if seconds is None:
        return "?"
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
