"""Modal dialogs: confirm (returns bool), export path (returns a path), error, file picker.

Each is a :class:`~textual.screen.ModalScreen` that returns its answer through ``dismiss`` so the
caller passes a callback to ``push_screen``; nothing here knows about runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DirectoryTree, Input, Label, Static
from textual.widgets.directory_tree import DirEntry

from solver.errors import InputError


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True (yes) or False (no, escape)."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, message: str, yes: str = "Yes", no: str = "No") -> None:
        """Build the dialog.

        Args:
            title: a short question.
            message: what answering yes does.
            yes: the confirming button's label.
            no: the refusing button's label.
        """
        super().__init__(classes="dialog")
        self.title_text = title
        self.message = message
        self.yes_label = yes
        self.no_label = no

    def compose(self) -> ComposeResult:
        """Title, message and two buttons (the safe one focused)."""
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.message, classes="dialog-message", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes_label, id="yes", variant="warning")
                yield Button(self.no_label, id="no", variant="primary")

    def on_mount(self) -> None:
        """Focus the refusing button so a stray Enter does no harm."""
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        """A button answers the question."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Answer from the keyboard (y / n / escape)."""
        self.dismiss(answer)


class PathDialog(ModalScreen[Path | None]):
    """Ask for a file path (prefilled); dismisses with the path, or None on escape."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, default: Path, action: str = "Export") -> None:
        """Build the dialog.

        Args:
            title: what the path is for.
            default: the prefilled path.
            action: the accepting button's label.
        """
        super().__init__(classes="dialog")
        self.title_text = title
        self.default = default
        self.action_label = action

    def compose(self) -> ComposeResult:
        """Title, the path input, a reason line and two buttons."""
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Input(str(self.default), id="path-input", select_on_focus=False)
            yield Static("", id="path-reason", classes="reason", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.action_label, id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Focus the input with the cursor at the end."""
        self.query_one(Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _accept(self) -> None:
        """Dismiss with the typed path, unless it is empty or a folder."""
        text = self.query_one(Input).value.strip()
        reason = self.query_one("#path-reason", Static)
        if not text:
            reason.update("type a file path")
            return
        path = Path(text).expanduser()
        if path.is_dir():
            reason.update(f"{path} is a folder: type a file name")
            return
        self.dismiss(path)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Dismiss without a path."""
        self.dismiss(None)


class ErrorDialog(ModalScreen[None]):
    """Show an error: one line, and optionally a longer detail that scrolls."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "close", "Close")]

    def __init__(self, title: str, message: str, detail: str = "") -> None:
        """Build the dialog.

        Args:
            title: what failed.
            message: one actionable line.
            detail: more text (a traceback), shown below in a scrolling box.
        """
        super().__init__(classes="dialog")
        self.title_text = title
        self.message = message
        self.detail = detail

    def compose(self) -> ComposeResult:
        """Title, message, optional detail and a close button."""
        with Vertical(classes="dialog-box -error"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.message, classes="dialog-message", markup=False)
            if self.detail:
                with VerticalScroll(classes="dialog-detail"):
                    yield Static(self.detail, markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="error")

    @on(Button.Pressed)
    def action_close(self) -> None:
        """Close the dialog."""
        self.dismiss(None)


class FilePickerDialog(ModalScreen[Path | None]):
    """Pick a file or a folder from a directory tree; dismisses with the path or None."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, root: Path | None = None) -> None:
        """Build the picker.

        Args:
            title: what is being picked.
            root: the folder the tree starts in (default: the working directory).
        """
        super().__init__(classes="dialog")
        self.title_text = title
        self.root = root or Path.cwd()

    def compose(self) -> ComposeResult:
        """Title, the tree, the chosen path (editable) and two buttons."""
        with Vertical(classes="dialog-box -picker"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield DirectoryTree(self.root, id="picker-tree")
            yield Input(str(self.root), id="picker-path")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Choose", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        """Start in the tree."""
        self.query_one(DirectoryTree).focus()

    @on(DirectoryTree.NodeHighlighted)
    def _highlighted(self, event: DirectoryTree.NodeHighlighted[DirEntry]) -> None:
        """Follow the tree's cursor in the path input."""
        entry = event.node.data
        if entry is not None:
            self.query_one("#picker-path", Input).value = str(entry.path)

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        """Choosing a file picks it."""
        self.dismiss(event.path)

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _accept(self) -> None:
        """Pick the path in the input (a folder, e.g. a model directory, or a file)."""
        text = self.query_one("#picker-path", Input).value.strip()
        if text:
            self.dismiss(Path(text).expanduser())

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Dismiss without a path."""
        self.dismiss(None)


def export_markdown(
    screen: Screen[Any],
    text: str,
    *,
    noun: str,
    default: Path,
    write: Callable[[str, Path], Path],
    written: Callable[[Path], None] | None = None,
) -> None:
    """Ask where to write ``text`` (prefilled with ``default``), confirm replacing a file, write.

    The report and compare screens share this flow. Failures are notified, never raised.

    Args:
        screen: the screen that asks (its app shows the dialogs and notifications).
        text: the Markdown to write.
        noun: what is written, for the dialogs ("report", "comparison").
        default: the path the dialog starts with.
        write: writes ``text`` to a path and returns where it went (the run store's atomic
            write, through the app); raises :class:`~solver.errors.InputError` when it cannot.
        written: called with the path once the file is written.
    """

    def save(path: Path) -> None:
        try:
            where = write(text, path)
        except InputError as error:
            screen.notify(str(error), title="Export failed", severity="error")
            return
        if written is not None:
            written(where)
        screen.notify(f"{noun.capitalize()} written to {where}", title="Exported")

    def chosen(path: Path | None) -> None:
        if path is None:
            return
        if not path.exists():
            save(path)
            return
        screen.app.push_screen(
            ConfirmDialog(
                "Replace the file?",
                f"{path} already exists. Replace it with this {noun}?",
                yes="Replace",
                no="Keep it",
            ),
            lambda yes: save(path) if yes else None,
        )

    screen.app.push_screen(PathDialog(f"Export the {noun} to", default), chosen)
