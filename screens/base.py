"""The base of the workbench's full screens: typed access to the App, and a footer that fits.

Every full screen (setup, run, report, runs, compare) subclasses :class:`WorkbenchScreen`, so
``self.app`` is the :class:`~duogpt_tui.app.DuoGPTApp` for the type checker (Textual's
``getters.app``), with no cast and no ``type: ignore``. At run time ``app`` is Textual's own
property, so a screen also mounts in a test's stand-in app.

On a narrow terminal (less than :data:`NARROW` columns) the footer turns compact and leaves out
the command palette's hint (``ctrl+p`` still opens it; help says so), so that every key of the
screen and the F-keys of the other screens stay visible at 80 columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events, on
from textual.screen import Screen
from textual.widgets import Footer

if TYPE_CHECKING:
    from textual import getters

    from duogpt_tui.app import DuoGPTApp

NARROW = 120
"""Below this many columns the footer is compact and hides the palette's hint."""


class WorkbenchScreen(Screen[None]):
    """A full screen of the workbench (dismissed with no result)."""

    if TYPE_CHECKING:
        app = getters.app(DuoGPTApp)

    @on(events.Resize)
    def _fit_footer(self, event: events.Resize) -> None:
        """A compact footer without the palette's hint on a narrow terminal."""
        narrow = event.size.width < NARROW
        for footer in self.query(Footer):
            footer.compact = narrow
            footer.show_command_palette = not narrow
