"""The run screen's live plots: error per block, weight density, sparsity per block, perplexity.

Each plot copies what it shows out of the :class:`~duogpt_tui.eventlog.EventLog` into its own
series (:meth:`show`), then redraws once (:meth:`~duogpt_tui.widgets.plot_base.SeriesKeys.replot`)
— only when its series changed, so the progress events that arrive between layers cost no
redraw. The screen decides how often :meth:`show` is called (a few times a second at most).
Every plot has its legend below the data (:mod:`duogpt_tui.widgets.plot_base`); blocks and
counts get integer ticks.
"""

from __future__ import annotations

import math
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding, BindingType
from textual.color import Color

from duogpt_tui.eventlog import EventLog
from duogpt_tui.formatting import number
from duogpt_tui.widgets.plot_base import RGB, SeriesKeys, ThemedPlot

REF_LABELS = {"dense": "dense", "dense_act": "dense+act", "pruned": "pruned"}
"""Legend names of the reference perplexities."""

MEDIAN = "median"
"""The legend name of the per-block median of the error plot."""

EIGHTHS = " ▁▂▃▄▅▆▇█"
"""Bar tops in eighths of a cell."""


class ErrorPlot(ThemedPlot):
    """Reconstruction error after pruning: one line per layer type across the blocks, and the
    median of each block's layers; ``l`` switches the y axis between log and linear.

    The types are the solver's (``LayerSolved.layer_type``: ``q k v o``, fused ``qkv`` and
    ``gate_up``, ``fc1 fc2``, ``experts``, else the layer's last name), so any family's layers
    are grouped; each type present gets its own colour.

    Attributes:
        series: ``{layer_type: (blocks, errors)}``.
        median: ``(blocks, median error)``.
        n_blocks: the x-axis extent (all decoder blocks of the model).
        scale: ``log`` or ``linear``.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "toggle_scale", "Log/linear", tooltip="The error axis: log or linear"),
    ]

    heading = "reconstruction error per block (after pruning)"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.series: dict[str, tuple[list[int], list[float]]] = {}
        self.median: tuple[list[int], list[float]] = ([], [])
        self.n_blocks = 0
        self.scale = "log"
        self._drawn_key: tuple[int, int, int] | None = None

    def show(self, log: EventLog) -> None:
        """Take the series from ``log`` and redraw (only when a layer was added or removed)."""
        key = (log.generation, len(log.layers), log.n_blocks)
        if key == self._drawn_key and self.drawn:
            return
        self._drawn_key = key
        self.series = log.errors_by_block()
        self.median = log.median_error_by_block()
        self.n_blocks = log.n_blocks
        self.replot()

    def action_toggle_scale(self) -> None:
        """Switch the y axis between log and linear."""
        self.scale = "linear" if self.scale == "log" else "log"
        self.replot()

    def draw(self) -> None:
        """One line per layer type (its own colour), the median in the foreground colour."""
        plt = self.plt
        log_scale = self.scale == "log"
        self.ylabel = "error (log)" if log_scale else "error"
        plt.xlabel("block")
        blocks = [b for xs, _ in self.series.values() for b in xs]
        right = max(self.n_blocks - 1, *blocks, 1)
        plt.xlim(0, right)
        self.integer_xticks(0, right)
        drawn: list[float] = []
        named = [*self.series.items(), (MEDIAN, self.median)]
        foreground = len(self.series_palette()) - 1  # the palette's last colour: the theme's
        for index, (kind, (xs, ys)) in enumerate(named):
            # one colour per layer type of this model (types in plotting order), whatever the
            # family calls its layers; the median alone in the foreground colour
            color_index = foreground if kind == MEDIAN else index % foreground
            color = self.add_series(kind, color_index, "point" if len(xs) == 1 else "line")
            if color is None or not xs:
                continue
            values = [math.log10(y) for y in ys] if log_scale else list(ys)
            drawn.extend(values)
            marker = "hd" if kind == MEDIAN else "braille"
            if len(xs) == 1:
                plt.scatter(xs, values, color=color, marker="●" if kind == MEDIAN else "dot")
            else:
                plt.plot(xs, values, color=color, marker=marker)
        if log_scale:
            self.decade_axis(drawn)
        elif drawn:
            plt.ylim(0, max(drawn) * 1.05 or 1.0)


class DensityHistogram(ThemedPlot):
    """Per-row weight density of one solved layer (from ``LayerSolved.histogram``): the layer
    selected in the table, else the latest one.

    Attributes:
        layer_name: which layer the histogram belongs to.
        centres: the bins' centres (fraction of kept weights per row).
        counts: rows per bin.
        row: the table row shown (None: the latest layer).
    """

    heading = "weight density per row"
    ylabel = "rows"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty histogram."""
        super().__init__(id=id, classes=classes)
        self.layer_name = ""
        self.centres: list[float] = []
        self.counts: list[int] = []
        self.row: int | None = None

    def show(self, log: EventLog, row: int | None = -1) -> None:
        """Take a layer's histogram from ``log`` and redraw (when it changed).

        Args:
            log: the run's events.
            row: the table row (solved layer) to show; None for the latest layer; -1 (the
                default) keeps the row chosen before.
        """
        if row != -1:
            self.row = row
        if self.row is None or self.row >= len(log.layers):
            layer, centres, counts = log.latest_histogram()
        else:
            layer, centres, counts = log.histogram(self.row)
        layer = layer.replace("self_attn.", "").replace("mlp.", "")
        if (layer, centres, counts) == (self.layer_name, self.centres, self.counts) and self.drawn:
            return
        self.layer_name, self.centres, self.counts = layer, centres, counts
        self.replot()

    def draw(self) -> None:
        """Bars of row counts per density bin (only the occupied range of bins)."""
        plt = self.plt
        plt.xlabel(f"kept fraction · {self.layer_name}" if self.layer_name else "kept fraction")
        if not self.counts:
            return
        used = [i for i, c in enumerate(self.counts) if c] or [0]
        low, high = max(used[0] - 1, 0), min(used[-1] + 1, len(self.counts) - 1)
        positions = list(range(low, high + 1))
        plt.bar(positions, self.counts[low : high + 1], color=self.color(0), width=0.8)
        shown = positions[:: max(1, math.ceil(len(positions) / 5))]
        plt.xticks([float(i) for i in shown], [f"{self.centres[i]:.2f}" for i in shown])
        top = max(max(self.counts), 1)
        plt.ylim(0, top)
        self.integer_yticks(0, top)


class BlockSparsityPlot(SeriesKeys):
    """Achieved weight and activation sparsity per finished block, as bars side by side.

    Drawn cell by cell (not by plotext, whose bars merge when blocks are many): each block
    takes one column per shown series and a gap; when the blocks do not fit, the latest ones
    are shown and the title says which.

    Attributes:
        blocks: block indices.
        weight: weight sparsity per block.
        activation: activation sparsity per block.
    """

    DEFAULT_CSS = """
    BlockSparsityPlot {
        height: 1fr;
        width: 1fr;
        min-height: 6;
    }
    BlockSparsityPlot:focus {
        background-tint: $accent 8%;
    }
    """

    heading = "sparsity per block"
    ylabel = "sparsity"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.blocks: list[int] = []
        self.weight: list[float] = []
        self.activation: list[float] = []

    def on_mount(self) -> None:
        """Draw again whenever the app's theme changes."""
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.replot())

    def show(self, log: EventLog) -> None:
        """Take the per-block sparsities from ``log`` and redraw (when they changed)."""
        data = log.block_sparsity()
        if data == (self.blocks, self.weight, self.activation) and self.drawn:
            return
        self.blocks, self.weight, self.activation = data
        self.replot()

    def render(self) -> RenderResult:
        """Head line, bars over a 0-100% axis, block numbers, legend."""
        width, height = self.size.width, self.size.height
        if width <= 0 or height <= 0:
            return Text("")
        self.legend = []
        bars = [
            (self.weight, self.add_series("weight", 0, "bar")),
            (self.activation, self.add_series("activation", 1, "bar")),
        ]
        shown = [(values, color) for values, color in bars if color is not None]
        heading = type(self).heading
        per_block = len(shown) + 1
        capacity = max((width - 6) // per_block, 1)
        first = max(len(self.blocks) - capacity, 0)
        if first:
            heading += f" (blocks {self.blocks[first]}-{self.blocks[-1]})"
        self.heading = heading
        head, legend, rows = self.frame(width, height)
        canvas = bar_rows(
            self.blocks[first:],
            [(values[first:], color) for values, color in shown],
            rows,
            Style(dim=True),
        )
        return Text("\n").join([*head, *canvas, *legend])


def bar_rows(
    blocks: list[int], series: list[tuple[list[float], RGB]], rows: int, axis: Style
) -> list[Text]:
    """Bars of values in [0, 1], one column per series and a gap per block, then block numbers.

    Args:
        blocks: the blocks, in order.
        series: ``(values per block, colour)`` for each series drawn.
        rows: the lines available (the last one takes the block numbers).
        axis: the style of the axis and its labels.
    """
    height = max(rows - 1, 1)
    per_block = len(series) + 1
    lines: list[Text] = []
    for row in range(height):
        level = height - 1 - row  # 0 at the bottom
        label = {0: "100%", height - 1: "  0%"}.get(row, " 50%" if row == height // 2 else "")
        line = Text(f"{label:>4}┤" if label else "    │", axis)
        for index in range(len(blocks)):
            for values, color in series:
                value = min(max(values[index], 0.0), 1.0)
                eighths = round(value * height * 8)
                fill = min(max(eighths - 8 * level, 0), 8)
                line.append(EIGHTHS[fill], Style(color=Color(*color).rich_color))
            line.append(" ")
        lines.append(line)
    if rows > 1:
        numbers = [" "] * (len(blocks) * per_block)
        room = 0
        for index, block in enumerate(blocks):
            text = str(block)
            start = index * per_block
            if start >= room and start + len(text) <= len(numbers) + 1:
                for offset, char in enumerate(text):
                    if start + offset < len(numbers):
                        numbers[start + offset] = char
                room = start + len(text) + 1
        lines.append(Text("     " + "".join(numbers), axis))
    return lines


class PerplexityPlot(ThemedPlot):
    """Perplexity: dense and pruned as horizontal references, proxy points by block.

    Attributes:
        refs: ``{label: ppl}`` for ``dense``, ``dense_act`` and ``pruned``.
        proxy_blocks: the blocks after which a proxy perplexity was measured.
        proxy_ppl: the proxy perplexities.
        n_blocks: the x-axis extent.
    """

    heading = "perplexity"
    ylabel = "ppl"

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
        plt.xlabel("block")
        right = max(self.n_blocks - 1, *self.proxy_blocks, 1)
        plt.xlim(0, right)
        self.integer_xticks(0, right)
        for index, label in enumerate(REF_LABELS):
            if label in self.refs:
                ppl = self.refs[label]
                color = self.add_series(f"{REF_LABELS[label]} {number(ppl, 1)}", index)
                if color is not None:
                    plt.plot([0, right], [ppl, ppl], color=color)
        if self.proxy_blocks:
            color = self.add_series("proxy", 3)
            if color is not None:
                plt.plot(self.proxy_blocks, self.proxy_ppl, color=color, marker="dot")
