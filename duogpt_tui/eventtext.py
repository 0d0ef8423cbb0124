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
    if isinstance(event, ev.TasksMeasured):
        scores = ", ".join(
            f"{name} {percent(score.get('acc'))}" for name, score in sorted(event.tasks.items())
        )
        return EventLine(
            f"zero-shot accuracy ({event.label})",
            f": {scores or 'no tasks'}",
            detail=f" [X {percent(event.act_sparsity)}, {duration(event.seconds)}]",
        )
    if isinstance(event, ev.DecodeSpeedMeasured):
        return EventLine(
            "decode speed",
            f": dual-sparse {event.speedup_dual:.2f}x, activation-sparse {event.speedup_act:.2f}x "
            f"over dense ({event.dense_tokens_per_s:.1f} tok/s)",
            detail=f" [{event.device}, {event.backend}, {event.threads} thread(s), "
            f"{event.tokens} tokens, {event.date}]",
        )
    if isinstance(event, ev.Note):
        if event.level == "warning":
            return EventLine("warning", f": {event.text}", "warning")
        return EventLine("note", f": {event.text}")
    if isinstance(event, ev.Finished):
        return EventLine("finished", f" in {duration(event.seconds)}", "success")
    if isinstance(event, ev.Cancelled):
        return EventLine("cancelled", f" {cancelled_where(event)}", "warning")
    if isinstance(event, ev.Failed):
        return EventLine("failed", f": {event.error}", "error")
    return EventLine(event.kind)


EVALUATIONS = {
    "dense": "evaluating the dense model",
    "dense_act": "evaluating the dense model with activation sparsity",
    "pruned": "evaluating the pruned model",
}
"""What the run is doing while it measures each perplexity label (a proxy names its block)."""


def cancelled_where(event: ev.Cancelled) -> str:
    """Where a cancelled run stopped, in words (blocks 0-based, as in every table).

    The reason the runner recorded (``cancelled while pruning``, ``cancelled during the
    evaluation of the pruned model``...) says the phase; the block is added while pruning.
    """
    reason = event.reason.strip()
    if reason.startswith(("cancelled while ", "cancelled during ", "cancelled before ")):
        where = reason.removeprefix("cancelled ")
        if event.block >= 0 and "block" not in where and "pruned model" not in where:
            where += f" (block {event.block})"
        return where
    where = f"in block {event.block}" if event.block >= 0 else "before pruning"
    return f"{where}: {reason}" if reason else where


def block_position(view: RunView, block: int) -> str:
    """A block as the table names it (0-based), with how many blocks are done: ``block 4
    (4/30 done)``."""
    done = f" ({view.blocks_done}/{view.n_blocks} done)" if view.n_blocks else ""
    return f"block {block}{done}"


def evaluation(progress: ev.Progress) -> str:
    """What an evaluation's progress event says: which model, and windows done."""
    label = progress.label
    what = EVALUATIONS.get(label, f"evaluating the {label} perplexity")
    if label == "proxy":
        what = "proxy perplexity"
    if progress.total:
        what += f" · {progress.done}/{progress.total} windows"
    return what


def activity(view: RunView) -> str:
    """One line on what the run is doing now (phase, block, layer) or how it ended.

    Blocks are 0-based, as in the layer table, the report and the cancel messages.
    """
    if view.terminal is not None:
        return event_line(view.terminal).text
    progress = view.progress
    if progress is not None and (not view.events or progress.t >= view.events[-1].t):
        label = f" · {progress.label}" if progress.label else ""
        if progress.phase == "prune" and view.current_block >= 0 and view.n_blocks:
            return f"{block_position(view, view.current_block)}{label}"
        if progress.phase == "eval":
            return evaluation(progress)
        count = f" {progress.done}/{progress.total}" if progress.total else ""
        return f"{progress.phase}{count}{label}"
    last_event = view.events[-1] if view.events else None
    if isinstance(last_event, ev.BlockStarted):
        return f"{block_position(view, last_event.block)} · collecting statistics"
    if view.layers:
        last = view.layers[-1]
        return f"{block_position(view, last.block)} · solved {last.name}"
    if view.started is not None:
        return f"pruning {view.started.model} on {view.started.device}"
    return "waiting for the run to start" if view.events else "no run yet"
