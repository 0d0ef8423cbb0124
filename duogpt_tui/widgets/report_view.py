"""A scrollable view of a Markdown report, rendered to lines off the UI thread.

Textual's ``Markdown`` widget mounts one widget per block and per table cell: the report of a
30-block model (a 210-row per-layer table) is ~2,500 widgets and takes seconds to mount and lay
out on the UI thread. Here the Markdown is rendered by Rich into styled lines once per text and
width (:func:`render_lines`, a pure function that a thread worker calls), and
:class:`ReportView` only crops the lines it shows (Textual's line API), so scrolling and screen
switches cost the same whatever the report's size.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.markdown import Markdown
from rich.style import Style
from rich.theme import Theme
from textual.color import Color
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

THEME_STYLES = {
    "markdown.h1": ("primary", True),
    "markdown.h1.border": ("primary", False),
    "markdown.h2": ("primary", True),
    "markdown.h3": ("secondary", True),
    "markdown.h4": ("secondary", False),
    "markdown.code": ("accent", False),
    "markdown.link": ("accent", False),
    "markdown.link_url": ("accent", False),
    "markdown.item.bullet": ("primary", True),
    "markdown.item.number": ("primary", True),
    "markdown.block_quote": ("foreground-muted", False),
    "markdown.hr": ("foreground-muted", False),
    "markdown.table.border": ("foreground-muted", False),
    "markdown.table.header": ("primary", True),
}
"""Rich Markdown style names -> (Textual theme variable, bold): the report's colours."""


def report_theme(variables: dict[str, str]) -> dict[str, Style]:
    """Rich styles for the report from the App's theme variables (no hard-coded colours).

    Args:
        variables: ``App.theme_variables`` (read on the UI thread).
    """
    background = _parse(variables.get("surface")) or Color(0, 0, 0)
    styles: dict[str, Style] = {}
    for name, (variable, bold) in THEME_STYLES.items():
        color = _parse(variables.get(variable)) or _parse(variables.get("foreground"))
        rich_color = (background + color).rich_color if color is not None else None
        styles[name] = Style(color=rich_color, bold=bold)
    return styles


def _parse(value: str | None) -> Color | None:
    """A theme colour (``#rrggbbaa`` too), or None when missing or unreadable."""
    if not value:
        return None
    try:
        return Color.parse(value)
    except Exception:  # a theme variable that is not a colour
        return None


def render_lines(text: str, width: int, styles: dict[str, Style] | None = None) -> list[Strip]:
    """Render Markdown ``text`` at ``width`` cells into lines (pure: safe on a worker thread).

    Args:
        text: the Markdown.
        width: the cells available (at least 20 are used).
        styles: Rich styles by name, from :func:`report_theme`.
    """
    console = Console(
        file=io.StringIO(),
        width=max(width, 20),
        color_system="truecolor",
        force_terminal=True,
        legacy_windows=False,
        theme=Theme(styles or {}, inherit=True),
    )
    lines = console.render_lines(Markdown(text, hyperlinks=False), console.options, pad=False)
    return [Strip(line) for line in lines]


class ReportView(ScrollView, can_focus=True):
    """Pre-rendered report lines in a scrollable region (arrow keys, page keys, the mouse).

    Attributes:
        lines: the rendered lines.
        width_rendered: the width the lines were rendered for.
    """

    DEFAULT_CSS = """
    ReportView {
        height: 1fr;
        background: $surface;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """An empty view."""
        super().__init__(id=id, classes=classes)
        self.lines: list[Strip] = []
        self.width_rendered = 0

    def show_lines(self, lines: list[Strip], width: int) -> None:
        """Show ``lines`` (rendered for ``width`` cells) from the top."""
        self.lines = lines
        self.width_rendered = width
        widest = max((line.cell_length for line in lines), default=0)
        self.virtual_size = Size(widest, len(lines))
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """The line at row ``y`` of the visible region."""
        scroll_x, scroll_y = self.scroll_offset
        index = y + scroll_y
        width = self.scrollable_content_region.width
        if index >= len(self.lines):
            return Strip.blank(width, self.rich_style)
        return self.lines[index].crop_extend(scroll_x, scroll_x + width, self.rich_style)
