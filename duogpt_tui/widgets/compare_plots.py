"""Plots of the comparison screen: error-per-layer curves overlaid, perplexity vs sparsity.

Both take plain per-run data (built from each run's events by the screen) and keep it as their
series; each run has its own colour and a short label (``#1 W50 X50``) in the legend below the
data. Every run's dense perplexity is its own reference line, in the run's colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from duogpt_tui.eventlog import ERROR_FLOOR
from duogpt_tui.formatting import number
from duogpt_tui.widgets.plot_base import ThemedPlot


@dataclass(frozen=True)
class RunPoint:
    """One run's figures for the comparison plots.

    Attributes:
        name: the run's short label (for the legend).
        errors: reconstruction error after pruning per solved layer, in order.
        weight_sparsity: achieved weight sparsity (None when no layer was pruned).
        act_sparsity: measured activation sparsity (None when no layer was pruned).
        ppl: the pruned model's perplexity (None when not measured).
        ppl_dense: the dense model's perplexity (None when not measured).
        speedup: the latest measured end-to-end dual-sparse decode speedup over dense
            (``duogpt speed RUN_DIR``; None when never measured).
    """

    name: str
    errors: list[float] = field(default_factory=list)
    weight_sparsity: float | None = None
    act_sparsity: float | None = None
    ppl: float | None = None
    ppl_dense: float | None = None
    speedup: float | None = None


class CompareErrorPlot(ThemedPlot):
    """Reconstruction error per layer, one line per run, on a log10 axis.

    Attributes:
        runs: the runs drawn, in order.
    """

    heading = "reconstruction error per layer"
    ylabel = "error (log)"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.runs: list[RunPoint] = []

    def show(self, runs: list[RunPoint]) -> None:
        """Take the runs and redraw."""
        self.runs = list(runs)
        self.replot()

    def draw(self) -> None:
        """One line of log10(error) against the layer index per run."""
        plt = self.plt
        plt.xlabel("layer")
        logs: list[float] = []
        longest = 1
        for index, run in enumerate(self.runs):
            color = self.add_series(run.name, index)
            if not run.errors or color is None:
                continue
            values = [math.log10(max(e, ERROR_FLOOR)) for e in run.errors]
            logs.extend(values)
            longest = max(longest, len(values) - 1)
            plt.plot(list(range(len(values))), values, color=color)
        plt.xlim(0, longest)
        self.integer_xticks(0, longest)
        self.decade_axis(logs)


class SparsityPerplexityPlot(ThemedPlot):
    """Pruned perplexity against weight sparsity (or the dual mean, or the measured speedup),
    one point per run, and each run's dense perplexity as a reference line in the run's colour.

    Attributes:
        runs: the runs drawn.
        axis: ``weight`` (x = weight sparsity), ``dual`` (x = mean of weight and activation
            sparsity) or ``speed`` (x = measured dual-sparse decode speedup over dense; runs
            never measured are named in the heading as not drawn).
        withheld: why the perplexities are not drawn (empty when they are): runs measured with
            different protocols share no axis until the user confirms.
    """

    AXES: ClassVar[dict[str, str]] = {
        "weight": "weight sparsity",
        "dual": "dual sparsity (mean of W and X)",
        "speed": "measured dual-sparse decode speedup (x dense)",
    }
    """The x-axis choices and their labels."""

    SPEED_HEADING = "perplexity vs measured speedup"
    """The title on the ``speed`` axis."""

    heading = "perplexity vs sparsity"
    ylabel = "ppl"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.runs: list[RunPoint] = []
        self.axis = "weight"
        self.withheld = ""

    def show(
        self, runs: list[RunPoint], axis: str | None = None, withheld: str | None = None
    ) -> None:
        """Take the runs (and optionally the x-axis and the reason to withhold) and redraw."""
        self.runs = list(runs)
        if axis is not None:
            self.axis = axis
        if withheld is not None:
            self.withheld = withheld
        self.replot()

    def x_of(self, run: RunPoint) -> float | None:
        """The run's x position on the current axis (None when unknown)."""
        if self.axis == "speed":
            return run.speedup
        if run.weight_sparsity is None:
            return None
        if self.axis == "dual":
            return (run.weight_sparsity + (run.act_sparsity or 0.0)) / 2
        return run.weight_sparsity

    def x_end(self) -> float:
        """The right end of the x axis: 1 for a sparsity; on the speedup axis at least 2x and
        a quarter beyond the largest speedup, rounded up to a half."""
        if self.axis != "speed":
            return 1.0
        speeds = [run.speedup for run in self.runs if run.speedup is not None]
        finite = [speed for speed in speeds if math.isfinite(speed)]
        return max(2.0, math.ceil(max(finite, default=0.0) * 1.25 * 2) / 2)

    def not_measured(self) -> list[str]:
        """The runs (their numbers, ``#2``) that have no measured speedup to draw."""
        return [
            run.name.split(" ", 1)[0]
            for run in self.runs
            if run.speedup is None or not math.isfinite(run.speedup)
        ]

    def draw(self) -> None:
        """A point per run and its dense reference (its colour), named in the legend."""
        plt = self.plt
        plt.xlabel(self.AXES.get(self.axis, self.axis))
        right = self.x_end()
        plt.xlim(0, right)
        self.heading = type(self).heading
        if self.withheld:
            self.heading = f"perplexity not drawn: {self.withheld}"
            return
        if self.axis == "speed":
            self.heading = self.SPEED_HEADING
            missing = self.not_measured()
            if missing:
                self.heading += f"; not drawn (never measured): {', '.join(missing)}"
        for index, run in enumerate(self.runs):
            x = self.x_of(run)
            measured = x is not None and run.ppl is not None and math.isfinite(run.ppl)
            color = self.add_series(run.name, index, "point")
            if color is None:
                continue
            if measured:
                plt.scatter([x], [run.ppl], color=color, marker="●")
            if run.ppl_dense is not None and math.isfinite(run.ppl_dense):
                plt.plot([0, right], [run.ppl_dense, run.ppl_dense], color=color, marker="braille")
        dense = sorted({number(r.ppl_dense, 1) for r in self.runs if r.ppl_dense is not None})
        if dense:
            self.plt.title("")  # the dense values go in the x label: the head line has the title
            plt.xlabel(f"{self.AXES.get(self.axis, self.axis)} · lines: dense {', '.join(dense)}")
