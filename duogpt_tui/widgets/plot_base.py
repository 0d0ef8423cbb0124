"""A theme-aware base for the workbench's plots (textual-plotext, ``plotext < 6``).

Each plot keeps its series as attributes and has one :meth:`ThemedPlot.replot` that clears the
widget's own ``plt`` figure, draws the series and refreshes. Colours come from the running
Textual theme (``$primary``, ``$accent``...), never hard-coded RGB, and the plot redraws when the
theme changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.color import Color
from textual_plotext import PlotextPlot

PALETTE_VARIABLES = ("primary", "accent", "success", "warning", "error", "secondary", "foreground")
"""Theme variables used, in order, for a plot's series."""

RGB = tuple[int, int, int] | str
"""A plotext colour: an RGB triple from the theme, or plotext's ``default``."""


class ThemedPlot(PlotextPlot):
    """A :class:`PlotextPlot` that draws its series in the app theme's colours.

    Subclasses keep their data on the widget and implement :meth:`draw`.

    Attributes:
        drawn: whether :meth:`replot` has run (a plot shown before its first replot is blank).
    """

    drawn = False

    DEFAULT_CSS = """
    ThemedPlot {
        height: 1fr;
        width: 1fr;
        min-height: 6;
    }
    """

    def on_mount(self) -> None:
        """Draw once, and again whenever the app's theme changes."""
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.replot())
        self.replot()

    def palette(self) -> list[RGB]:
        """The series colours, from the current theme's variables."""
        variables = self.app.theme_variables
        colors: list[RGB] = []
        for name in PALETTE_VARIABLES:
            value = variables.get(name)
            if value:
                colors.append(Color.parse(value).rgb)
        return colors or ["default"]

    def color(self, index: int) -> RGB:
        """The palette colour for series number ``index`` (cycling)."""
        colors = self.palette()
        return colors[index % len(colors)]

    def replot(self) -> None:
        """Clear the figure, draw the series and refresh the widget."""
        self.plt.clear_figure()
        self.draw()
        self.drawn = True
        self.refresh()

    def draw(self) -> None:
        """Draw the series on ``self.plt`` (implemented by subclasses)."""

    def decade_axis(self, logs: Sequence[float]) -> None:
        """Label the y axis of ``log10``-transformed ``logs`` at whole decades, spanning them."""
        ticks, labels = decade_ticks(logs)
        if ticks:
            self.plt.yticks(ticks, labels)
            self.plt.ylim(ticks[0], ticks[-1])


def decade_ticks(values: Sequence[float]) -> tuple[list[float], list[str]]:
    """Tick positions and labels for log10-transformed values (``1e-3``, ``1e-2``...).

    Args:
        values: the plotted values, already ``log10``-transformed.

    Returns:
        ``(positions, labels)`` at every integer decade spanning the values (at least two).
    """
    if not values:
        return [], []
    low, high = math.floor(min(values)), math.ceil(max(values))
    if high == low:
        high = low + 1
    step = max(1, math.ceil((high - low) / 6))
    positions = [float(d) for d in range(low, high + 1, step)]
    return positions, [f"1e{int(d)}" for d in positions]
