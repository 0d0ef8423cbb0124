"""The base of the workbench's full screens: typed access to the App.

Every full screen (setup, run, report, runs, compare) subclasses :class:`WorkbenchScreen`, so
``self.app`` is the :class:`~duogpt_tui.app.DuoGPTApp` for the type checker (Textual's
``getters.app``), with no cast and no ``type: ignore``. At run time ``app`` is Textual's own
property, so a screen also mounts in a test's stand-in app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

if TYPE_CHECKING:
    from textual import getters

    from duogpt_tui.app import DuoGPTApp


class WorkbenchScreen(Screen[None]):
    """A full screen of the workbench (dismissed with no result)."""

    if TYPE_CHECKING:
        app = getters.app(DuoGPTApp)
