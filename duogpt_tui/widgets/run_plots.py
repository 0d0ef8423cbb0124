"""The run screen's live plots: error per layer, weight density, sparsity per block, perplexity.

Each plot copies what it shows out of the :class:`~duogpt_tui.eventlog.EventLog` into its own
series (:meth:`show`), then redraws once (:meth:`~duogpt_tui.widgets.plot_base.ThemedPlot.replot`)
— only when its series changed, so the progress events that arrive between layers cost no
redraw. The screen decides how often :meth:`show` is called (a few times a second at most).
"""

from __future__ import annotations

import math

from duogpt_tui.eventlog import LAYER_TYPES, EventLog
from duogpt_tui.formatting import number
from duogpt_tui.widgets.plot_base import ThemedPlot

REF_LABELS = {"dense": "dense", "dense_act": "dense+act", "pruned": "pruned"}
"""Legend names of the reference perplexities."""


class ErrorPlot(ThemedPlot):
    """Reconstruction error after pruning, one point per solved layer, coloured by layer type.

    Attributes:
        series: ``{layer_type: (layer indices, errors)}``.
        n_layers: the x-axis extent (all prunable layers of the model).
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.n_layers = 0
        self._drawn_key: tuple[int, int, int] | None = None

    def show(self, log: EventLog) -> None:
        """Take the series from ``log`` and redraw (only when a layer was added or removed)."""
        key = (log.generation, len(log.layers), log.n_layers)
        if key == self._drawn_key and self.drawn:
            return
        self._drawn_key = key
        self.series = log.errors_by_type()
        self.n_layers = log.n_layers
        self.replot()

    def draw(self) -> None:
        """Log10 of the error against the layer index, one colour per layer type."""
        plt = self.plt
        plt.title("reconstruction error per layer (after pruning)")
        plt.xlabel("layer")
        if self.n_layers:
            plt.xlim(0, max(self.n_layers - 1, 1))
        logs: list[float] = []
        for index, (kind, (xs, ys)) in enumerate(self.series.items()):
            color_index = LAYER_TYPES.index(kind) if kind in LAYER_TYPES else index
            values = [math.log10(y) for y in ys]
            logs.extend(values)
            plt.scatter(xs, values, label=kind, color=self.color(color_index), marker="dot")
        self.decade_axis(logs)


class DensityHistogram(ThemedPlot):
    """Per-row weight density of the latest solved layer (from ``LayerSolved.histogram``).

    Attributes:
        title: which layer the histogram belongs to.
        centres: the bins' centres (fraction of kept weights per row).
        counts: rows per bin.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty histogram."""
        super().__init__(id=id, classes=classes)
        self.title = ""
        self.centres: list[float] = []
        self.counts: list[int] = []

    def show(self, log: EventLog) -> None:
        """Take the latest layer's histogram from ``log`` and redraw (when it changed)."""
        title, centres, counts = log.latest_histogram()
        title = title.replace("self_attn.", "").replace("mlp.", "")
        if (title, centres, counts) == (self.title, self.centres, self.counts) and self.drawn:
            return
        self.title, self.centres, self.counts = title, centres, counts
        self.replot()

    def draw(self) -> None:
        """Bars of row counts per density bin (only the occupied range of bins)."""
        plt = self.plt
        plt.title("weight density per row")
        if self.title:
            plt.xlabel(self.title)
        if not self.counts:
            return
        used = [i for i, c in enumerate(self.counts) if c] or [0]
        low, high = max(used[0] - 1, 0), min(used[-1] + 1, len(self.counts) - 1)
        positions = list(range(low, high + 1))
        plt.bar(positions, self.counts[low : high + 1], color=self.color(0), width=0.8)
        shown = positions[:: max(1, math.ceil(len(positions) / 5))]
        plt.xticks([float(i) for i in shown], [f"{self.centres[i]:.2f}" for i in shown])


class BlockSparsityPlot(ThemedPlot):
    """Achieved weight and activation sparsity per finished block, as paired bars.

    Attributes:
        blocks: block indices.
        weight: weight sparsity per block.
        activation: activation sparsity per block.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.blocks: list[int] = []
        self.weight: list[float] = []
        self.activation: list[float] = []

    def show(self, log: EventLog) -> None:
        """Take the per-block sparsities from ``log`` and redraw (when they changed)."""
        data = log.block_sparsity()
        if data == (self.blocks, self.weight, self.activation) and self.drawn:
            return
        self.blocks, self.weight, self.activation = data
        self.replot()

    def draw(self) -> None:
        """Two bars per block (weight, activation) on a 0..1 axis."""
        plt = self.plt
        plt.title("sparsity per block")
        plt.ylim(0, 1)
        if not self.blocks:
            return
        plt.multiple_bar(  # type: ignore[call-arg]  # the stub says label=, the code labels=
            self.blocks,
            [self.weight, self.activation],
            labels=["weight", "activation"],
            color=[self.color(0), self.color(1)],  # type: ignore[arg-type]  # one per series
        )
        shown = self.blocks[:: max(1, math.ceil(len(self.blocks) / 8))]
        plt.xticks([float(b) for b in shown], [str(b) for b in shown])


class PerplexityPlot(ThemedPlot):
    """Perplexity: dense and pruned as horizontal references, proxy points by block.

    Attributes:
        refs: ``{label: ppl}`` for ``dense``, ``dense_act`` and ``pruned``.
        proxy_blocks: the blocks after which a proxy perplexity was measured.
        proxy_ppl: the proxy perplexities.
        n_blocks: the x-axis extent.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.refs: dict[str, float] = {}
        self.proxy_blocks: list[int] = []
        self.proxy_ppl: list[float] = []
        self.n_blocks = 0

    def show(self, log: EventLog) -> None:
        """Take the perplexities from ``log`` and redraw (when they changed)."""
        refs = log.perplexity_refs()
        blocks, ppl = log.proxy_points()
        data = (refs, blocks, ppl, log.n_blocks)
        if data == (self.refs, self.proxy_blocks, self.proxy_ppl, self.n_blocks) and self.drawn:
            return
        self.refs, self.proxy_blocks, self.proxy_ppl, self.n_blocks = data
        self.replot()

    def draw(self) -> None:
        """Reference lines across the blocks, the proxy curve growing block by block."""
        plt = self.plt
        plt.title("perplexity")
        plt.xlabel("block")
        right = max(self.n_blocks - 1, *self.proxy_blocks, 1)
        plt.xlim(0, right)
        for index, label in enumerate(REF_LABELS):
            if label in self.refs:
                ppl = self.refs[label]
                name = f"{REF_LABELS[label]} {number(ppl, 1)}"
                plt.plot([0, right], [ppl, ppl], label=name, color=self.color(index))
        if self.proxy_blocks:
            plt.plot(
                self.proxy_blocks,
                self.proxy_ppl,
                label="proxy",
                color=self.color(3),
                marker="dot",
            )
