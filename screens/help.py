"""The help screen (``?`` or F1): what each screen is for and its keys."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP_TEXT = """\
# DuoGPT workbench

Dual-sparse pruning (weights **and** activations) of a causal language model, layer by layer.

| key | where | what |
|---|---|---|
| F2 / F3 / F4 / F5 | anywhere | setup / run / report / runs screens |
| ctrl+r | setup | start a run with the settings (pre-flight check first) |
| ctrl+o | setup | pick a model folder or text file |
| c | run | cancel the run (asks first; the run directory stays valid) |
| e | report | export the report (asks before overwriting) |
| enter | runs | open a run: its plots and report come back from `events.jsonl` |
| space | runs | mark a run; **c** compares the marked runs (two or more) |
| ctrl+p | anywhere | command palette |
| ctrl+q | anywhere | quit (asks first while a run is in progress) |

The run keeps going whichever screen you look at. Every figure comes from the run's events;
the pre-flight line on the setup screen is only an estimate.
"""


class HelpScreen(ModalScreen[None]):
    """Keys and a few words on each screen; escape, q or ? closes it."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self) -> None:
        """Build the help dialog."""
        super().__init__(classes="dialog")

    def compose(self) -> ComposeResult:
        """The help text."""
        with Vertical(classes="dialog-box -help"):
            yield Markdown(HELP_TEXT)

    def action_close(self) -> None:
        """Close help."""
        self.dismiss(None)
