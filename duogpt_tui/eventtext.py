"""Events as text: the one renderer of the CLI's stderr lines, the TUI's log and its activity line.

:func:`event_line` says what one event means in one line; each front end chooses which kinds it
shows and how (the CLI prints them, the TUI styles the line's head by its tone and stamps it
with the time). :func:`activity` says what a run is doing now, from its :class:`RunView`.
"""

from __future__ import annotations

from dataclasses import dataclass

from duogpt_tui.formatting import duration, megabytes, percent, perplexity, scientific
from duogpt_tui.runview import RunView
from solver import events as ev

TONES = ("info", "success", "warning", "error")
"""How a line reads: plain, a good end, something to look at, a failure."""


@dataclass(frozen=True)
class EventLine:
    """One event as text: a head (the word a front end may colour), the rest, and details.

    Attributes:
        head: the first words (``finished``, ``warning``, ``perplexity (pruned)``...).
        body: the rest of the line, from the character after the head.
        tone: one of :data:`TONES`.
        detail: how the figure was measured (`` [moby-dick, 16x256 tokens, X 50.0%]``), for
            front ends with room for it; empty for most events.
    """

    head: str
    body: str = ""
    tone: str = "info"
    detail: str = ""

    @property
    def text(self) -> str:
        """The whole line, details included."""
        return self.head + self.body + self.detail

    @property
    def short(self) -> str:
        """The line without its details (for a narrow log)."""
        return self.head + self.body


def event_line(event: ev.Event) -> EventLine:
    """The line of one event.

    Args:
        event: any event of the stream.

    Returns:
        Its line (an event of an unknown kind reads as its kind).
    """
    if isinstance(event, ev.RunStarted):
        return EventLine(
            "started",
            f": {event.model} ({event.family}, {event.n_blocks} blocks, {event.n_layers} layers) "
            f"on {event.device}",
        )
    if isinstance(event, ev.Progress):
        label = f" {event.label}" if event.label else ""
        return EventLine(event.phase or "progress", f": {event.done}/{event.total}{label}")
    if isinstance(event, ev.BlockStarted):
        return EventLine(f"block {event.block}", " started")
    if isinstance(event, ev.LayerSolved):
        return EventLine(
            f"block {event.block} {event.name}",
            f": W {percent(event.weight_sparsity)}, X {percent(event.act_sparsity)}, error "
            f"{scientific(event.error_before, 1)} -> {scientific(event.error_after, 1)}",
        )
    if isinstance(event, ev.BlockFinished):
        return EventLine(
            f"block {event.block} done",
            f" in {duration(event.seconds)}: W {percent(event.weight_sparsity)}, "
            f"X {percent(event.act_sparsity)}, peak {megabytes(event.peak_memory_mb)}",
        )
    if isinstance(event, ev.PerplexityMeasured):
        where = f" after block {event.block}" if event.label == "proxy" else ""
        return EventLine(
            f"perplexity ({event.label}{where})",
            f": {perplexity(event.ppl)}",
            detail=f" [{event.text}, {event.windows}x{event.seqlen} tokens, "
            f"X {percent(event.act_sparsity)}]",
        )
    if isinstance(event, ev.Note):
        if event.level == "warning":
            return EventLine("warning", f": {event.text}", "warning")
        return EventLine("note", f": {event.text}")
    if isinstance(event, ev.Finished):
        return EventLine("finished", f" in {duration(event.seconds)}", "success")
    if isinstance(event, ev.Cancelled):
        where = f"in block {event.block}" if event.block >= 0 else "before pruning"
        return EventLine("cancelled", f" {where}: {event.reason}", "warning")
    if isinstance(event, ev.Failed):
        return EventLine("failed", f": {event.error}", "error")
    return EventLine(event.kind)


def activity(view: RunView) -> str:
    """One line on what the run is doing now (phase, block, layer) or how it ended."""
    if view.terminal is not None:
        return event_line(view.terminal).text
    progress = view.progress
    if progress is not None and (not view.events or progress.t >= view.events[-1].t):
        label = f" · {progress.label}" if progress.label else ""
        if progress.phase == "prune" and view.current_block >= 0 and view.n_blocks:
            return f"block {view.current_block + 1}/{view.n_blocks}{label}"
        count = f" {progress.done}/{progress.total}" if progress.total else ""
        return f"{progress.phase}{count}{label}"
    last_event = view.events[-1] if view.events else None
    if isinstance(last_event, ev.BlockStarted):
        return f"block {last_event.block + 1}/{view.n_blocks} · collecting statistics"
    if view.layers:
        last = view.layers[-1]
        return f"block {last.block + 1}/{view.n_blocks} · solved {last.name}"
    if view.started is not None:
        return f"pruning {view.started.model} on {view.started.device}"
    return "waiting for the run to start" if view.events else "no run yet"
