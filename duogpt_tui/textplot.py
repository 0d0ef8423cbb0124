"""Small, pure text plots for the Markdown report and the terminal.

Fixed width and height, plain ASCII, no colour and no clocks: the same numbers always draw the
same characters, so a report that embeds these plots stays byte-identical across renders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from duogpt_tui.formatting import short_number

MARKERS = "*o+x#@%&"
"""Point markers, one per series in order (cycled when there are more series)."""

_TICK_WIDTH = 9
"""Characters reserved for a y-axis tick label."""


def line_plot(
    series: dict[str, list[float]],
    width: int = 72,
    height: int = 12,
    log_y: bool = False,
    title: str = "",
) -> str:
    """Plot one or more series against their index as a character grid.

    Each series is drawn with its own marker (later series draw over earlier ones where they
    meet); when a series has more points than there are columns, the points that fall into one
    column share it. Non-finite values (and values <= 0 with ``log_y``) are left out.

    Args:
        series: name -> y values; the x value of a point is its index in the list.
        width: total width of every line of the plot, y-axis labels included (>= 24).
        height: rows of the plotting area (>= 3).
        log_y: plot log10(y); the tick labels still show y.
        title: an optional first line.

    Returns:
        The plot as lines joined by ``\\n`` (no trailing newline), ending with a legend.
    """
    width = max(int(width), 24)
    height = max(int(height), 3)
    columns = width - _TICK_WIDTH - 2
    points = _plottable(series, log_y)
    lines = [title] if title else []
    if not points:
        lines.append("(no data to plot)")
        return "\n".join(lines)
    n_x = max(len(values) for values in series.values())
    y_low, y_high = _y_range([y for _, pts in points for _, y in pts])
    lines += _plot_area(points, (0, max(n_x - 1, 1)), (y_low, y_high), columns, height, log_y)
    lines.append(_x_labels(n_x, columns))
    lines.append(_legend(points, log_y))
    return "\n".join(line.rstrip() for line in lines)


def _plot_area(
    points: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    columns: int,
    height: int,
    log_y: bool,
) -> list[str]:
    """The plotting area: ``height`` rows of markers behind y tick labels, then the x axis line.

    Each series gets its own marker (later series draw over earlier ones where they meet).
    """
    grid = [[" "] * columns for _ in range(height)]
    for index, (_, pts) in enumerate(points):
        marker = MARKERS[index % len(MARKERS)]
        for x, y in pts:
            column = _scale(x, x_range[0], x_range[1], columns)
            row = height - 1 - _scale(y, y_range[0], y_range[1], height)
            grid[row][column] = marker
    lines = []
    for row in range(height):
        label = _tick_label(row, height, y_range[0], y_range[1], log_y)
        lines.append(f"{label:>{_TICK_WIDTH}} |" + "".join(grid[row]).rstrip())
    lines.append(" " * _TICK_WIDTH + " +" + "-" * columns)
    return lines


def bar_chart(labels: Sequence[str], values: Sequence[float], width: int = 50) -> str:
    """Horizontal bars, one line per label, scaled so the largest value fills ``width``.

    Args:
        labels: one label per bar (left column).
        values: the bars' values (negative and non-finite values draw as empty bars).
        width: the longest bar's length in characters.

    Returns:
        The chart as lines joined by ``\\n`` (no trailing newline).

    Raises:
        ValueError: labels and values differ in length.
    """
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} values")
    if not labels:
        return "(no data to plot)"
    width = max(int(width), 1)
    clean = [float(v) if math.isfinite(v) and v > 0 else 0.0 for v in values]
    top = max(clean)
    label_width = max(len(str(label)) for label in labels)
    value_texts = [_bar_value(v) for v in values]
    value_width = max(len(text) for text in value_texts)
    lines = []
    for label, value, text in zip(labels, clean, value_texts, strict=True):
        length = int(value / top * width + 0.5) if top > 0 else 0
        bar = "#" * length
        lines.append(f"{label!s:<{label_width}} |{bar:<{width}} {text:>{value_width}}")
    return "\n".join(lines)


def _plottable(
    series: dict[str, list[float]], log_y: bool
) -> list[tuple[str, list[tuple[int, float]]]]:
    """The drawable points of every series, as (x, y-in-plot-units), in the dict's order."""
    out = []
    for name, values in series.items():
        pts = []
        for x, value in enumerate(values):
            y = float(value)
            if not math.isfinite(y) or (log_y and y <= 0):
                continue
            pts.append((x, math.log10(y) if log_y else y))
        out.append((name, pts))
    return out if any(pts for _, pts in out) else []


def _y_range(values: list[float]) -> tuple[float, float]:
    """Lowest and highest y, widened a little when all values are equal."""
    low, high = min(values), max(values)
    if high - low < 1e-12:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _scale(value: float, low: float, high: float, cells: int) -> int:
    """Map value in [low, high] to a cell index in [0, cells)."""
    fraction = (value - low) / (high - low)
    return min(cells - 1, max(0, int(fraction * (cells - 1) + 0.5)))


def _tick_label(row: int, height: int, low: float, high: float, log_y: bool) -> str:
    """The y label for a row: top, middle and bottom rows are labelled."""
    if row not in (0, height // 2, height - 1):
        return ""
    y = high - (high - low) * row / (height - 1)
    return short_number(10**y if log_y else y)


def _x_labels(n_x: int, columns: int) -> str:
    """The x-axis labels: the first and the last index under the axis ends."""
    first, last = "0", str(max(n_x - 1, 0))
    gap = max(columns - len(first) - len(last), 1)
    return " " * (_TICK_WIDTH + 2) + first + " " * gap + last


def _legend(points: list[tuple[str, list[tuple[int, float]]]], log_y: bool) -> str:
    """One legend line: marker and name per series, and the scale."""
    parts = [f"{MARKERS[i % len(MARKERS)]} {name}" for i, (name, _) in enumerate(points)]
    scale = "log scale" if log_y else "linear scale"
    return " " * (_TICK_WIDTH + 2) + "   ".join(parts) + f"   ({scale})"


def _bar_value(value: float) -> str:
    """A bar's value label: integers without decimals, other numbers short."""
    if math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return short_number(float(value))


def scatter_plot(
    series: dict[str, list[tuple[float, float]]],
    width: int = 72,
    height: int = 12,
    log_y: bool = False,
    title: str = "",
    x_label: str = "",
) -> str:
    """Plot ``(x, y)`` points of one or more series on shared axes (x is a value, not an index).

    Like :func:`line_plot`, with the x axis scaled from the smallest to the largest x and labelled
    at both ends. Non-finite points (and y <= 0 with ``log_y``) are left out.

    Args:
        series: name -> list of ``(x, y)`` points.
        width: total width of every line of the plot, y-axis labels included (>= 24).
        height: rows of the plotting area (>= 3).
        log_y: plot log10(y); the tick labels still show y.
        title: an optional first line.
        x_label: an optional name of the x axis, printed under it.

    Returns:
        The plot as lines joined by ``\\n`` (no trailing newline), ending with a legend.
    """
    width = max(int(width), 24)
    height = max(int(height), 3)
    columns = width - _TICK_WIDTH - 2
    points: list[tuple[str, list[tuple[float, float]]]] = []
    for name, pairs in series.items():
        pts = []
        for x, y in pairs:
            x, y = float(x), float(y)
            if not (math.isfinite(x) and math.isfinite(y)) or (log_y and y <= 0):
                continue
            pts.append((x, math.log10(y) if log_y else y))
        points.append((name, pts))
    lines = [title] if title else []
    if not any(pts for _, pts in points):
        lines.append("(no data to plot)")
        return "\n".join(lines)
    x_low, x_high = _y_range([x for _, pts in points for x, _ in pts])
    y_low, y_high = _y_range([y for _, pts in points for _, y in pts])
    lines += _plot_area(points, (x_low, x_high), (y_low, y_high), columns, height, log_y)
    first, last = short_number(x_low), short_number(x_high)
    gap = max(columns - len(first) - len(last), 1)
    lines.append(" " * (_TICK_WIDTH + 2) + first + " " * gap + last)
    if x_label:
        lines.append(" " * (_TICK_WIDTH + 2) + f"x: {x_label}")
    lines.append(_legend([(name, []) for name, _ in points], log_y))
    return "\n".join(line.rstrip() for line in lines)
