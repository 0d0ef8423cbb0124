"""Plots of the comparison screen: error-per-layer curves overlaid, perplexity vs sparsity.

Both take plain per-run data (built from each run's events by the screen) and keep it as their
series; one ``replot()`` draws them in the theme's colours, one colour per run.
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
        name: the run's name (its directory's name).
        errors: reconstruction error after pruning per solved layer, in order.
        weight_sparsity: achieved weight sparsity (None when no layer was pruned).
        act_sparsity: measured activation sparsity (None when no layer was pruned).
        ppl: the pruned model's perplexity (None when not measured).
        ppl_dense: the dense model's perplexity (None when not measured).
    """

    name: str
    errors: list[float] = field(default_factory=list)
    weight_sparsity: float | None = None
    act_sparsity: float | None = None
    ppl: float | None = None
    ppl_dense: float | None = None


class CompareErrorPlot(ThemedPlot):
    """Reconstruction error per layer, one line per run, on a log10 axis.

    Attributes:
        runs: the runs drawn, in order.
    """

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
        plt.title("reconstruction error per layer")
        plt.xlabel("layer")
        logs: list[float] = []
        for index, run in enumerate(self.runs):
            if not run.errors:
                continue
            values = [math.log10(max(e, ERROR_FLOOR)) for e in run.errors]
            logs.extend(values)
            plt.plot(list(range(len(values))), values, label=run.name, color=self.color(index))
        self.decade_axis(logs)


class SparsityPerplexityPlot(ThemedPlot):
    """Pruned perplexity against weight sparsity (or the dual mean), one point per run.

    Attributes:
        runs: the runs drawn.
        axis: ``weight`` (x = weight sparsity) or ``dual`` (x = mean of weight and activation
            sparsity).
    """

    AXES: ClassVar[dict[str, str]] = {
        "weight": "weight sparsity",
        "dual": "dual sparsity (mean of W and X)",
    }
    """The x-axis choices and their labels."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty plot."""
        super().__init__(id=id, classes=classes)
        self.runs: list[RunPoint] = []
        self.axis = "weight"

    def show(self, runs: list[RunPoint], axis: str | None = None) -> None:
        """Take the runs (and optionally the x-axis) and redraw."""
        self.runs = list(runs)
        if axis is not None:
            self.axis = axis
        self.replot()

    def x_of(self, run: RunPoint) -> float | None:
        """The run's x position on the current axis (None when unknown)."""
        if run.weight_sparsity is None:
            return None
        if self.axis == "dual":
            return (run.weight_sparsity + (run.act_sparsity or 0.0)) / 2
        return run.weight_sparsity

    def draw(self) -> None:
        """A point per run (its own colour, named in the legend) and the dense reference."""
        plt = self.plt
        plt.title("perplexity vs sparsity")
        plt.xlabel(self.AXES.get(self.axis, self.axis))
        xs: list[float] = []
        for index, run in enumerate(self.runs):
            x = self.x_of(run)
            if x is None or run.ppl is None or not math.isfinite(run.ppl):
                continue
            xs.append(x)
            plt.scatter([x], [run.ppl], label=run.name, color=self.color(index), marker="●")
        dense = [r.ppl_dense for r in self.runs if r.ppl_dense is not None]
        if dense and xs:
            low, high = min([*xs, 0.0]), max([*xs, 1.0])
            plt.plot(
                [low, high],
                [dense[0], dense[0]],
                label=f"dense {number(dense[0], 1)}",
                color=self.color(len(self.runs)),
            )
        plt.xlim(0, 1)
