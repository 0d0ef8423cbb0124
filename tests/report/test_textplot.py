"""Text plots: fixed size, deterministic, axis labels, odd data."""

from __future__ import annotations

import math

import pytest

from duogpt_tui.formatting import short_number as format_number
from duogpt_tui.textplot import bar_chart, line_plot


def test_line_plot_has_a_fixed_frame() -> None:
    series = {"a": [float(i) for i in range(100)], "b": [99.0 - i for i in range(100)]}
    plot = line_plot(series, width=60, height=10, title="t")
    lines = plot.splitlines()
    assert lines[0] == "t"
    grid = lines[1:11]
    assert all(len(line) <= 60 for line in lines)
    assert all("|" in line for line in grid)
    assert lines[11].endswith("+" + "-" * 49)
    assert lines[12].split() == ["0", "99"]
    assert "* a" in lines[13] and "o b" in lines[13] and "linear scale" in lines[13]
    assert grid[0].split("|")[0].strip() == "99"  # top label: the largest value
    assert grid[-1].split("|")[0].strip() == "0"


def test_line_plot_places_extremes_at_the_corners() -> None:
    plot = line_plot({"up": [1.0, 2.0, 3.0]}, width=40, height=5).splitlines()
    columns = [line.split("|", 1)[1] for line in plot[:5]]
    assert columns[0].rstrip().endswith("*")  # the largest value: top row, last column
    assert columns[-1].startswith("*")  # the smallest: bottom row, first column


def test_line_plot_log_scale_labels_show_values() -> None:
    plot = line_plot({"err": [1e-4, 1e-3, 1e-2, 1e-1]}, width=50, height=7, log_y=True)
    labels = [line.split("|")[0].strip() for line in plot.splitlines()[:7]]
    assert labels[0] == "0.1" and labels[-1] == "1.0e-04" and labels[3] == "0.003162"
    assert "(log scale)" in plot


def test_line_plot_skips_what_it_cannot_draw() -> None:
    plot = line_plot({"x": [math.nan, 0.0, -1.0, 10.0, math.inf]}, width=40, height=4, log_y=True)
    assert plot.count("*") == 2  # one point, and the legend marker
    assert line_plot({"x": [math.nan]}) == "(no data to plot)"
    assert line_plot({}, title="t") == "t\n(no data to plot)"


def test_line_plot_is_deterministic() -> None:
    series = {"a": [math.sin(i / 3) + 2 for i in range(300)]}
    assert line_plot(series, log_y=True) == line_plot(dict(series), log_y=True)


def test_bar_chart_scales_to_the_largest_value() -> None:
    chart = bar_chart(["low", "mid", "high"], [0, 5, 10], width=20).splitlines()
    assert chart[0] == "low  |" + " " * 20 + "  0"
    assert chart[1] == "mid  |" + "#" * 10 + " " * 10 + "  5"
    assert chart[2] == "high |" + "#" * 20 + " 10"


def test_bar_chart_odd_input() -> None:
    assert bar_chart([], []) == "(no data to plot)"
    assert "#" not in bar_chart(["a", "b"], [0, 0])
    assert "#" not in bar_chart(["a"], [math.nan])
    with pytest.raises(ValueError, match="2 labels for 1 values"):
        bar_chart(["a", "b"], [1])


def test_format_number() -> None:
    assert [format_number(v) for v in (0, 1.5, 123.456, 1e-5, 2.5e7, math.inf)] == [
        "0",
        "1.5",
        "123.5",
        "1.0e-05",
        "2.5e+07",
        "inf",
    ]


def test_scatter_plot_places_points_by_value() -> None:
    from duogpt_tui.textplot import scatter_plot

    text = scatter_plot(
        {"a": [(0.0, 1.0), (1.0, 100.0)], "b": [(0.5, 10.0)]},
        width=30,
        height=3,
        log_y=True,
        x_label="fraction",
    )
    lines = text.splitlines()
    assert lines[0].endswith("|" + " " * 18 + "*")  # x = 1, y = 100: top right
    assert lines[1].endswith("|" + " " * 9 + "o")  # x = 0.5, y = 10: middle
    assert lines[2].endswith("|*")  # x = 0, y = 1: bottom left
    assert "x: fraction" in text and "* a   o b   (log scale)" in text
    assert scatter_plot({"a": [(float("nan"), 1.0)]}) == "(no data to plot)"
    assert text == scatter_plot(
        {"a": [(0.0, 1.0), (1.0, 100.0)], "b": [(0.5, 10.0)]}, 30, 3, True, "", "fraction"
    )
