"""The help screen (``?`` or F1): what each screen is for and its keys; it scrolls."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP_TEXT = """\
# DuoGPT workbench

Dual-sparse pruning (weights **and** activations) of a causal language model, layer by layer.

| key | where | what |
|---|---|---|
| F2 / F3 / F4 / F5 | anywhere | setup / run / report / runs screens |
| ctrl+p | anywhere | command palette: start, cancel, export, compare, open a run... |
| ? or F1 | anywhere | this help (inside a text field, `?` types a `?`: use F1) |
| ctrl+q | anywhere | quit (asks first while a run is in progress) |
| ctrl+r | setup | start a run with the settings (or the Start button) |
| ctrl+o | setup | pick a model folder or text file |
| c | run | cancel the run (asks first; the run directory stays valid) |
| p / n | run | small terminal: next plot / the table or the notes |
| 1-9 / 0 | a plot | show or hide a series / show them all (tab moves to a plot) |
| g | a plot | hide or show the plot's legend |
| l | error plot | log or linear error axis |
| e | report | export the report (asks before overwriting) |
| enter | runs | open a run: its plots and report come back from `events.jsonl` |
| space / c | runs | mark a run / compare the marked runs (two or more) |
| / s d u | runs | filter / sort / delete (asks first) / reopen in setup |
| x / a | compare | weight or dual sparsity axis / draw runs of different protocols |

**Blocks** are numbered from 0 everywhere (progress, table, report, messages).
**The layer table**: W and X are the weight and activation sparsity reached; *before* and
*after* are the layer's reconstruction error with the dense and the pruned weights (after is
larger: that is the damage pruning does); *secs* is the solve time.

The run keeps going whichever screen you look at. Every figure comes from the run's events;
the pre-flight line on the setup screen is only an estimate. Escape, q or ? closes this help;
the arrow keys and page keys scroll it.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and a few words on each screen; escape, q or ? closes it."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self) -> None:
        """Build the help dialog."""
        super().__init__(classes="dialog")

    def compose(self) -> ComposeResult:
        """The help text, in a box that scrolls when the terminal is small."""
        with VerticalScroll(classes="dialog-box -help", id="help-scroll"):
            yield Markdown(HELP_TEXT)

    def on_mount(self) -> None:
        """Focus the scrolling box, so the arrow and page keys scroll it."""
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        """Close help."""
        self.dismiss(None)
