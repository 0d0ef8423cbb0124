"""The setup screen's pre-flight line: the estimate of memory and time, or what is wrong.

The text comes from :func:`duogpt_tui.preflight_text.estimate_lines`, the lines ``duogpt prune``
prints on stderr, so the CLI and the workbench say the same thing for the same settings.
"""

from __future__ import annotations

from textual.widgets import Static

from duogpt_tui.preflight_text import EstimateLines


class PreflightLine(Static):
    """Under the setup form: the estimate (and the memory warning), or why there is none.

    Classes: ``-invalid`` when a field is wrong, ``-warning`` when memory looks too small,
    ``-pending`` while the check of new settings runs (the previous text stays, dimmed).
    """

    DEFAULT_CSS = """
    PreflightLine {
        height: auto;
        padding: 0 1;
        color: $text-muted;
        background: $boost;
    }
    PreflightLine.-pending {
        text-style: dim;
    }
    PreflightLine.-warning {
        color: $text-warning;
    }
    PreflightLine.-invalid {
        color: $text-error;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """A line that says the check is running; text is set by the ``show_*`` methods."""
        super().__init__("pre-flight: checking…", markup=False, id=id, classes=classes)

    def show_estimate(self, lines: EstimateLines) -> None:
        """Show the estimate, and the memory warning under it."""
        self.set_classes(self._kept() | ({"-warning"} if lines.warning else set()))
        self.update(f"{lines.line}\n{lines.warning}" if lines.warning else lines.line)

    def show_problem(self, problem: str) -> None:
        """Show why the settings cannot run."""
        self.set_classes(self._kept() | {"-invalid"})
        self.update(f"pre-flight: {problem or 'fix the highlighted fields'}")

    def show_pending(self) -> None:
        """The settings changed and are being checked: dim the estimate shown until the answer
        (a problem shown is replaced, since the change may have fixed it)."""
        if self.has_class("-invalid"):
            self.set_classes(self._kept())
            self.update("pre-flight: checking…")
        self.add_class("-pending")

    def _kept(self) -> set[str]:
        """The classes that are not this widget's states."""
        return set(self.classes) - {"-pending", "-warning", "-invalid"}
