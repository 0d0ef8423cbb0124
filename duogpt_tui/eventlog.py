"""The in-memory event log of one run: the model that the TUI's widgets redraw from.

The App appends every solver event it receives (ARCHITECTURE.md, "The Textual side") and the
widgets read the views below. :class:`EventLog` *is* a :class:`~duogpt_tui.runview.RunView` — the
one fold of the event stream that the CLI, the report and the run store use too — grown one event
at a time, plus what only the live screens need: a generation for redraws, the notices of the
workbench, and the plot series. Nothing here imports Textual, so the views are tested as plain
functions. High-rate :class:`~solver.events.Progress` events are not stored: only the latest one
is kept (the run directory's ``events.jsonl`` keeps them all).

Widgets follow the log with a *cursor*: :attr:`EventLog.generation` changes whenever the log is
replaced (a new run, a reopened run), so a widget that drew generation ``g`` up to event ``n``
knows whether to append or to redraw from scratch.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from duogpt_tui import eventtext
from duogpt_tui.runview import RunView
from solver.events import Event

LAYER_TYPES = ("q", "k", "v", "o", "gate", "up", "down", "qkv", "gate_up", "fc1", "fc2", "experts")
"""Layer types in plotting order (a LLaMA-style decoder block)."""

ERROR_FLOOR = 1e-12
"""Smallest reconstruction error drawn on a log scale (an exact 0 would have no logarithm)."""


@dataclass
class EventLog(RunView):
    """Every event of one run, in arrival order, folded into a :class:`RunView`.

    Attributes:
        generation: bumped by :meth:`reset`; widgets compare it with the one they drew.
        notices: what the workbench or the run store noticed about the run, not part of its
            events (a stale lock taken over, an interrupted run, corrupt lines skipped), in
            order.
    """

    generation: int = 0
    notices: list[str] = field(default_factory=list)

    def reset(self, events: Iterable[Event] = (), notices: Iterable[str] = ()) -> None:
        """Forget everything (a new run starts or another run is opened), then add ``events``.

        Args:
            events: the run's events so far.
            notices: the run's notices so far (see :attr:`notices`).
        """
        generation = self.generation + 1
        self.clear()
        self.generation = generation
        self.notices = list(notices)
        self.extend(events)

    def add_notice(self, text: str) -> None:
        """Add one notice (see :attr:`notices`)."""
        self.notices.append(text)

    def append(self, event: Event) -> None:
        """Add one event (:meth:`RunView.add`)."""
        self.add(event)

    # ----------------------------------------------------------------------------- status

    @property
    def status(self) -> str:
        """``empty``, ``running``, ``finished``, ``cancelled`` or ``failed``."""
        if self.terminal is None and not self.events and self.progress is None:
            return "empty"
        return super().status

    def activity(self) -> str:
        """One line on what the run is doing now (:func:`duogpt_tui.eventtext.activity`)."""
        return eventtext.activity(self)

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

    def errors_by_block(self) -> dict[str, tuple[list[int], list[float]]]:
        """Reconstruction error after pruning per layer type across blocks.

        Returns:
            ``{layer_type: (blocks, errors)}``, types in :data:`LAYER_TYPES` order first; a
            block with several layers of one type (experts) gives their median. Errors are
            clamped to :data:`ERROR_FLOOR` for a log scale.
        """
        series: dict[str, dict[int, list[float]]] = {}
        for layer in self.layers:
            kind = layer.layer_type or layer.name.rsplit(".", 1)[-1]
            by_block = series.setdefault(kind, {})
            by_block.setdefault(layer.block, []).append(max(float(layer.error_after), ERROR_FLOOR))
        order = {name: i for i, name in enumerate(LAYER_TYPES)}
        ordered = sorted(series.items(), key=lambda item: order.get(item[0], len(order)))
        return {
            kind: (list(by_block), [statistics.median(v) for v in by_block.values()])
            for kind, by_block in ordered
        }

    def median_error_by_block(self) -> tuple[list[int], list[float]]:
        """The median reconstruction error over each block's layers: ``(blocks, medians)``."""
        by_block: dict[int, list[float]] = {}
        for layer in self.layers:
            by_block.setdefault(layer.block, []).append(max(float(layer.error_after), ERROR_FLOOR))
        return list(by_block), [statistics.median(v) for v in by_block.values()]

    def latest_histogram(self) -> tuple[str, list[float], list[int]]:
        """Per-row weight density histogram of the latest solved layer.

        Returns:
            ``(title, bin centres, counts)``; empty lists before the first layer.
        """
        for index in range(len(self.layers) - 1, -1, -1):
            if self.layers[index].histogram:
                return self.histogram(index)
        return "", [], []

    def histogram(self, index: int) -> tuple[str, list[float], list[int]]:
        """Per-row weight density histogram of solved layer number ``index`` (a table row).

        Returns:
            ``(title, bin centres, counts)``; empty lists for a layer without one.
        """
        if not 0 <= index < len(self.layers):
            return "", [], []
        layer = self.layers[index]
        if not layer.histogram:
            return f"block {layer.block} {layer.name}", [], []
        edges = list(layer.histogram_edges)
        if len(edges) != len(layer.histogram) + 1:
            n = len(layer.histogram)
            edges = [i / n for i in range(n + 1)]
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        return f"block {layer.block} {layer.name}", centres, list(layer.histogram)

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
        return {label: p.ppl for label, p in self.reference_perplexities().items()}

    def proxy_points(self) -> tuple[list[int], list[float]]:
        """Proxy perplexity points measured during the run: ``(block, ppl)``."""
        points = self.proxies
        return [p.block for p in points], [p.ppl for p in points]
