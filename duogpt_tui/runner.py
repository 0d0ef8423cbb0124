"""Drive one run: the single place where events go from the solver to the run directory.

The CLI and the TUI both call :func:`execute`, which iterates the solver's event generator,
appends every event to the run directory before handing it on, and guarantees that the run
directory always says how the run ended: exactly one terminal event, a ``report.md`` and no lock
left behind — also when the solver raises, stops early, or the consumer stops reading.

``solver.run.pipeline`` (torch, transformers) is imported only when a run starts, so importing this
module (and ``duogpt --help``) stays fast.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from typing import Protocol

from duogpt_tui import report
from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError


class CancelToken(Protocol):
    """Anything with ``is_set()`` (a ``threading.Event``, a Textual worker's cancelled event)."""

    def is_set(self) -> bool:
        """True once cancellation was asked for."""
        ...


Source = Callable[..., Iterator[ev.Event]]
"""An event source: ``source(config, cancel, workdir)``, like ``solver.run.pipeline.run``; a source
that can continue a run also takes ``resume=True`` (see :func:`execute`)."""


def pipeline_source() -> Source:
    """The real event source, ``solver.run.pipeline.run`` (imported on first use)."""
    from solver.run.pipeline import run

    return run


def preflight(config: RunConfig) -> None:
    """Cheap checks before a run directory is made (``solver.run.pipeline.preflight``).

    Raises:
        InputError: one line saying what is wrong with the input.
    """
    from solver.run.pipeline import preflight as check

    check(config)


def execute(
    config: RunConfig,
    run_dir: RunDir,
    cancel: CancelToken | None = None,
    source: Source | None = None,
    resume: bool = False,
) -> Iterator[ev.Event]:
    """Run ``source`` and record every event in ``run_dir``, yielding each one as it comes.

    The run directory always ends with exactly one terminal event: the source's own; else a
    :class:`~solver.events.Failed` when the source raises or stops without one; else a
    :class:`~solver.events.Cancelled` when the consumer closes this generator early (or a
    ``KeyboardInterrupt`` goes through it). Then ``report.md`` is rendered and the lock released.

    Args:
        config: the run's configuration.
        run_dir: a run directory made by :meth:`RunDir.create` (locked by this process).
        cancel: the cancel token handed to the source.
        source: the event source; defaults to :func:`pipeline_source`.
        resume: continue the run from its checkpoint (``run_dir`` made by
            :meth:`RunDir.resume`): the source is called with ``resume=True`` and its events
            are appended after the ones kept.

    Yields:
        Every event of the run, the terminal one last.
    """
    recorder = _Recorder(run_dir)
    try:
        yield from _drive(recorder, config, cancel, source, resume)
    finally:
        recorder.finish(config)


def _drive(
    recorder: _Recorder,
    config: RunConfig,
    cancel: CancelToken | None,
    source: Source | None,
    resume: bool = False,
) -> Iterator[ev.Event]:
    """Iterate the source, recording each event; turn errors and a missing end into failures."""
    try:
        extra = {"resume": True} if resume else {}
        events = (source or pipeline_source())(config, cancel, recorder.run_dir.path, **extra)
        try:
            for event in events:
                if recorder.record(event):
                    yield event
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
    except Exception as exc:  # a solver bug or an unexpected error: the run must still end
        if recorder.terminal is None:
            yield recorder.fail(exc)
    if recorder.terminal is None:
        yield recorder.record_new(
            ev.Failed(
                t=recorder.last_t,
                error="the solver stopped without saying how the run ended (a solver bug): "
                "events.jsonl holds what it did",
                block=recorder.block,
            )
        )


class _Recorder:
    """Appends events to a run directory and remembers how far the run got.

    Attributes:
        run_dir: where events go.
        terminal: the terminal event once one was written.
        last_t: the time offset of the last event.
        block: the block being pruned (-1 before the first).
    """

    def __init__(self, run_dir: RunDir) -> None:
        """Start recording into ``run_dir``."""
        self.run_dir = run_dir
        self.terminal: ev.Event | None = None
        self.last_t = 0.0
        self.block = -1
        self._finished = False

    def record(self, event: ev.Event) -> bool:
        """Append an event; False (and nothing written) for events after the terminal one."""
        if self.terminal is not None:
            return False
        self.run_dir.append(event)
        self.last_t = max(self.last_t, event.t)
        if isinstance(event, ev.BlockStarted):
            self.block = event.block
        if ev.is_terminal(event):
            self.terminal = event
        return True

    def record_new(self, event: ev.Event) -> ev.Event:
        """Append an event made here and return it."""
        self.record(event)
        return event

    def fail(self, exc: BaseException) -> ev.Event:
        """Record a failed event for an exception that escaped the source."""
        category = "input" if isinstance(exc, InputError) else "run"
        text = str(exc).strip()
        message = text.splitlines()[0] if text else ""
        if category == "run":
            message = f"unexpected {type(exc).__name__}" + (f": {message}" if message else "")
            message += " (see events.jsonl for the traceback; --debug shows it)"
        detail = "".join(traceback.format_exception(exc))
        return self.record_new(
            ev.Failed(
                t=self.last_t, error=message, block=self.block, category=category, detail=detail
            )
        )

    def finish(self, config: RunConfig) -> None:
        """End the recording: a cancelled event if none is terminal, the report, the lock."""
        if self._finished:
            return
        self._finished = True
        try:
            if self.terminal is None:
                self.record(
                    ev.Cancelled(
                        t=self.last_t, block=self.block, reason="stopped before the run ended"
                    )
                )
            _write_report(self.run_dir, config)
        finally:
            self.run_dir.release()


def _write_report(run_dir: RunDir, config: RunConfig) -> None:
    """Render ``report.md`` from the run's events; a rendering bug becomes a note, not a crash."""
    try:
        text = report.render_markdown(run_dir.events(), config=config.to_dict())
        run_dir.write_report(text)
    except Exception as exc:  # the run's results matter more than its report
        run_dir.notes.append(f"could not write report.md: {type(exc).__name__}: {exc}")
