"""A base for the workbench's plots (textual-plotext, ``plotext < 6``): frame, legend, keys.

Each plot keeps its series as attributes and draws them in :meth:`ThemedPlot.draw`; the widget
lays itself out as three bands that never overlap, so that no label hides a data point:

* a head line: the y axis's label on the left (``↑ error``), the title in the middle;
* the canvas: plotext's axes and data, never given a label (plotext would draw its legend on
  top of the data);
* the legend below the canvas: one entry per series, numbered; the number keys show or hide a
  series (``0`` shows them all) and ``g`` hides or shows the legend, while the plot has focus.

Series colours come from :data:`SERIES_COLORS`, the Okabe-Ito palette: seven colours that stay
distinct for the common kinds of colour blindness, then the theme's foreground. The frame,
background and text follow the running Textual theme, and a plot redraws when the theme
changes. Integer axes (layers, blocks, counts) get integer ticks (:func:`integer_ticks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.widget import Widget
from textual_plotext import PlotextPlot

SERIES_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
"""The Okabe-Ito palette (blue, orange, green, purple, sky blue, vermillion, yellow): distinct
for deuteranopia, protanopia and tritanopia. The eighth series takes the theme's foreground."""

RGB = tuple[int, int, int]
"""A series colour as plotext takes it."""

MIN_CANVAS = 5
"""Rows the canvas keeps before the legend gives up lines (then the legend is cut)."""

MARKS = {"line": "━", "point": "●", "bar": "█"}
"""How a legend entry shows its series' kind."""


@dataclass
class LegendEntry:
    """One series in a legend.

    Attributes:
        label: the series' name.
        color: its colour.
        kind: ``line``, ``point`` or ``bar`` (the mark drawn before the label).
        hidden: whether the series is hidden (its entry stays, dimmed, so it can come back).
    """

    label: str
    color: RGB
    kind: str = "line"
    hidden: bool = False


def series_colors(foreground: str | None) -> list[RGB]:
    """The series colours: :data:`SERIES_COLORS`, then ``foreground`` (the theme's)."""
    colors = [Color.parse(c).rgb for c in SERIES_COLORS]
    try:
        colors.append(Color.parse(foreground or "#e0e0e0").rgb)
    except Exception:  # a theme variable that is not a colour
        colors.append((224, 224, 224))
    return colors


def legend_lines(entries: Sequence[LegendEntry], width: int, numbered: bool = True) -> list[Text]:
    """The legend's lines: entries side by side, wrapped to ``width``.

    Args:
        entries: the series, in order (entry ``i`` is toggled by key ``i + 1``).
        width: the cells a line may take.
        numbered: put each entry's key before it (only the first nine have one).
    """
    lines: list[Text] = []
    line = Text()
    for index, entry in enumerate(entries):
        key = f"{index + 1}" if numbered and index < 9 else ""
        piece = Text()
        if key:
            piece.append(key, Style(dim=True))
        style = Style(color=Color(*entry.color).rich_color)
        piece.append(MARKS.get(entry.kind, "■"), Style(dim=True) if entry.hidden else style)
        label_style = Style(dim=True, strike=True) if entry.hidden else Style()
        piece.append(f" {entry.label}", label_style)
        gap = 2 if line.cell_len else 0
        if line.cell_len and line.cell_len + gap + piece.cell_len > width:
            lines.append(line)
            line, gap = Text(), 0
        line.append(" " * gap)
        line.append_text(piece)
    if line.cell_len:
        lines.append(line)
    for text in lines:
        text.truncate(width, overflow="ellipsis")
    return lines


def head_line(title: str, ylabel: str, width: int) -> Text:
    """The line above the canvas: ``↑ ylabel`` on the left, the title centred."""
    left = f"↑ {ylabel}" if ylabel else ""
    start = max((width - len(title)) // 2, len(left) + 2 if left else 0)
    text = Text(left, Style(dim=True))
    text.append(" " * max(start - len(left), 0))
    text.append(title, Style(bold=True))
    text.truncate(width, overflow="ellipsis")
    return text


def integer_ticks(low: float, high: float, slots: int = 6) -> list[int]:
    """At most ``slots`` integer ticks spanning ``[low, high]`` at a step of 1, 2, 5, 10, 20...

    Args:
        low: the axis's start.
        high: the axis's end.
        slots: the most ticks wanted (at least 2).
    """
    first, last = math.ceil(low), math.floor(high)
    if last < first:
        return [first]
    slots = max(slots, 2)
    step = 1
    while (last - first) // step + 1 > slots:
        for factor in (2, 2.5, 2):
            step = int(step * factor)
            if (last - first) // step + 1 <= slots:
                break
    start = math.ceil(first / step) * step
    return list(range(start, last + 1, step))


def decade_ticks(values: Sequence[float], slots: int = 7) -> tuple[list[float], list[str]]:
    """Tick positions and labels for log10-transformed values (``1e-3``, ``1e-2``...).

    Args:
        values: the plotted values, already ``log10``-transformed.
        slots: the most ticks wanted (fewer on a short plot, so that no two share a row).

    Returns:
        ``(positions, labels)`` at integer decades spanning the values (at least two).
    """
    if not values:
        return [], []
    low, high = math.floor(min(values)), math.ceil(max(values))
    if high == low:
        high = low + 1
    step = max(1, math.ceil((high - low) / max(slots - 1, 1)))
    high = low + math.ceil((high - low) / step) * step
    positions = [float(d) for d in range(low, high + 1, step)]
    return positions, [f"1e{int(d)}" for d in positions]


class SeriesKeys(Widget):
    """What every plot shares: a title, a y-axis label, a legend, and keys to toggle series.

    Subclasses register each series while drawing with :meth:`add_series`, which returns the
    series' colour, or None when the user hid it.

    Attributes:
        heading: the plot's title.
        ylabel: the y axis's label.
        hidden: the labels of the series the user hid.
        show_legend: whether the legend band is drawn.
        legend: the series registered by the last drawing, in order.
        drawn: whether the plot was drawn (a plot shown before its first drawing is blank).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(str(n), f"toggle_series({n - 1})", f"Series {n}", show=False)
            for n in range(1, 10)
        ),
        Binding("0", "show_all", "All series", show=False),
        Binding("g", "toggle_legend", "Legend"),
    ]

    can_focus = True
    heading = ""
    ylabel = ""
    drawn = False

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create the plot with every series shown and the legend on."""
        super().__init__(id=id, classes=classes)
        self.hidden: set[str] = set()
        self.show_legend = True
        self.legend: list[LegendEntry] = []

    def series_palette(self) -> list[RGB]:
        """The series colours for the running theme (:func:`series_colors`)."""
        return series_colors(self.app.theme_variables.get("foreground"))

    def color(self, index: int) -> RGB:
        """The colour of series number ``index`` (cycling)."""
        colors = self.series_palette()
        return colors[index % len(colors)]

    def add_series(self, label: str, index: int, kind: str = "line") -> RGB | None:
        """Register a series in the legend; its colour, or None when it is hidden."""
        color = self.color(index)
        hidden = label in self.hidden
        self.legend.append(LegendEntry(label, color, kind, hidden))
        return None if hidden else color

    def action_toggle_series(self, index: int) -> None:
        """Show or hide the legend's series number ``index + 1``."""
        if 0 <= index < len(self.legend):
            self.hidden ^= {self.legend[index].label}
            self.replot()

    def action_show_all(self) -> None:
        """Show every series."""
        self.hidden.clear()
        self.replot()

    def action_toggle_legend(self) -> None:
        """Hide or show the legend band."""
        self.show_legend = not self.show_legend
        self.replot()

    def replot(self) -> None:
        """Draw again (on the next refresh)."""
        self.drawn = True
        self.refresh()

    def frame(self, width: int, height: int) -> tuple[list[Text], list[Text], int]:
        """The head and legend bands for a plot of ``width`` x ``height`` cells, and the rows
        left for the canvas (call after the series were registered)."""
        head = [head_line(self.heading, self.ylabel, width)] if height >= 4 else []
        legend = legend_lines(self.legend, width) if self.show_legend else []
        legend = legend[: max(height - len(head) - MIN_CANVAS, 0)]
        return head, legend, max(height - len(head) - len(legend), 1)


class ThemedPlot(SeriesKeys, PlotextPlot):
    """A :class:`PlotextPlot` in the :class:`SeriesKeys` frame, in the theme's colours.

    Subclasses keep their data on the widget and implement :meth:`draw` (the figure is cleared
    and drawn again at each render, for the widget's current size).

    Attributes:
        canvas_rows: the rows (start, end) of the canvas in the last render.
    """

    DEFAULT_CSS = """
    ThemedPlot {
        height: 1fr;
        width: 1fr;
        min-height: 6;
    }
    ThemedPlot:focus {
        background-tint: $accent 8%;
    }
    """

    canvas_rows = (0, 0)

    def on_mount(self) -> None:
        """Draw again whenever the app's theme changes (PlotextPlot's own handler runs too)."""
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.replot())

    def render(self) -> RenderResult:
        """The head line, plotext's canvas, and the legend below it."""
        width, height = self.size.width, self.size.height
        if width <= 0 or height <= 0:
            return Text("")
        self.legend = []
        self.plt.clear_figure()
        self.draw()
        head, legend, rows = self.frame(width, height)
        self.canvas_rows = (len(head), len(head) + rows)
        self.plt.plotsize(width, rows)
        self.plt._set_size(width, rows)  # as PlotextPlot.render does (textual-plotext issue 5)
        self.plt.theme(self._get_plotext_theme_name(self.app.theme))
        canvas = Text.from_ansi(self.plt.build()).split("\n")[:rows]
        return Text("\n").join([*head, *canvas, *legend])

    def draw(self) -> None:
        """Draw the series on ``self.plt`` (implemented by subclasses)."""

    def integer_xticks(self, low: float, high: float, labels: bool = True) -> None:
        """Integer ticks on the x axis from ``low`` to ``high``, as many as the width allows."""
        slots = max(2, (self.size.width - 8) // 6)
        ticks = integer_ticks(low, high, slots)
        self.plt.xticks([float(t) for t in ticks], [str(t) for t in ticks] if labels else None)

    def integer_yticks(self, low: float, high: float) -> None:
        """Integer ticks on the y axis from ``low`` to ``high`` (counts)."""
        ticks = integer_ticks(low, high, max(2, self.canvas_height() // 2 + 1))
        self.plt.yticks([float(t) for t in ticks], [str(t) for t in ticks])

    def canvas_height(self) -> int:
        """Rows the canvas's data area will take (before :meth:`render` lays it out: an
        estimate: the head, a legend line, the x axis, its labels and title)."""
        return max(self.size.height - 5, 1)

    def decade_axis(self, logs: Sequence[float]) -> None:
        """Label the y axis of ``log10``-transformed ``logs`` at whole decades, spanning them."""
        ticks, labels = decade_ticks(logs, max(2, (self.canvas_height() - 2) // 2 + 1))
        if ticks:
            self.plt.yticks(ticks, labels)
            self.plt.ylim(ticks[0], ticks[-1])
