"""A table of solved layers that follows the event log, adding only the rows it lacks."""

from __future__ import annotations

from textual.widgets import DataTable

from duogpt_tui.eventlog import EventLog
from duogpt_tui.formatting import number, percent, scientific

COLUMNS = ("blk", "layer", "shape", "W", "X", "before", "after", "secs")
"""Column headers: block, layer name, weight shape, achieved weight and activation sparsity,
reconstruction error before and after pruning, seconds of the solve."""


class LayerTable(DataTable[str]):
    """One row per solved layer (block, name, shape, sparsities, errors, seconds).

    Attributes:
        generation: the log generation the rows belong to.
    """

    DEFAULT_CSS = """
    LayerTable {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """Create an empty table with row cursor and zebra stripes."""
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self.generation = -1

    def on_mount(self) -> None:
        """Add the columns (unless :meth:`show` came first)."""
        self._add_columns()

    def _add_columns(self) -> None:
        """Add the columns once."""
        if not self.columns:
            self.add_columns(*COLUMNS)

    def show(self, log: EventLog) -> None:
        """Bring the rows up to date with ``log`` (all rows again when the log was replaced).

        Only the rows it lacks are added (never a full rebuild while a run goes on).
        """
        self._add_columns()  # the screen may draw before this widget's own mount handler ran
        if log.generation != self.generation:
            self.clear()
            self.generation = log.generation
        follow = self.row_count == 0 or self.cursor_row >= self.row_count - 1
        for layer in log.layers[self.row_count :]:
            shape = "x".join(str(n) for n in layer.shape)
            self.add_row(
                str(layer.block),
                layer.name,
                shape,
                percent(layer.weight_sparsity),
                percent(layer.act_sparsity),
                scientific(layer.error_before, 1),
                scientific(layer.error_after, 1),
                number(layer.seconds),
                key=f"{layer.block}.{layer.name}",
            )
        if follow and self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)
