"""Drive one run: the single place where events go from the solver to the run directory.

The CLI and the TUI both call :func:`execute`, which iterates the solver's event generator,
appends every event to the run directory before handing it on, and guarantees that the run
directory always says how the run ended: exactly one terminal event, a ``report.md`` and no lock
left behind — also when the solver raises, stops early, or the consumer stops reading.

The runner is the one place that makes terminal events (a test scans the product code for any
other). The solver yields none: its generator *returns* :class:`~solver.events.RunTotals` when it
gets to the end, which :func:`finished` turns into :class:`~solver.events.Finished`, and raises
:class:`~solver.run.stop.RunStopped` when it does not, which :func:`terminal_event` (like any
other exception) turns into :class:`~solver.events.Failed` or :class:`~solver.events.Cancelled`.
The event is recorded and then yielded — the consumer (the TUI included) shows the very event
that went to disk, and never makes one of its own. :func:`stream` applies the same ending
without a run directory, for consumers that only read the events (ranks other than 0,
benchmarks, tests).

``solver.run.pipeline`` (torch, transformers) is imported only when a run starts, so importing this
module (and ``duogpt --help``) stays fast.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

from duogpt_tui import report
from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.config import RunConfig
from solver.errors import DuoGPTError, InputError
from solver.run.stop import CancelToken, RunCancelled, RunStopped

__all__ = [
    "CancelToken",
    "Source",
    "ending_after_error",
    "execute",
    "finished",
    "pipeline_source",
    "preflight",
    "stream",
    "terminal_event",
]

Source = Callable[..., Iterator[ev.Event]]
"""An event source: ``source(config, cancel, workdir)``, like ``solver.run.pipeline.run``; a source
that can continue a run also takes ``resume=True`` (see :func:`execute`). A source that gets to
the end *returns* its :class:`~solver.events.RunTotals` (a generator's return value), which the
runner makes into :class:`~solver.events.Finished`; one that does not get there raises. A
replay of a recorded run (the scripted sources of the tests) may instead yield the terminal event
it replays and return nothing: that event is recorded as it is, and the runner adds none."""


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
) -> Generator[ev.Event, None, None]:
    """Run ``source`` and record every event in ``run_dir``, yielding each one as it comes.

    The run directory always ends with exactly one terminal event: the :func:`finished` of the
    totals the source returned (or the terminal event a replay yielded); else the
    :func:`terminal_event` of what the source raised (a :class:`~solver.events.Failed` or
    :class:`~solver.events.Cancelled`); else a :class:`~solver.events.Failed` when the source
    stops without totals or a terminal event; else a
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
        Every event of the run, the terminal one last (the same objects that were recorded).
    """
    recorder = _Recorder(run_dir)
    try:
        yield from _drive(recorder, config, cancel, source, run_dir.path, resume)
    finally:
        recorder.finish(config)


def stream(
    config: RunConfig,
    cancel: CancelToken | None = None,
    workdir: Path | None = None,
    source: Source | None = None,
    resume: bool = False,
) -> Generator[ev.Event, None, None]:
    """Run ``source`` and yield its events, ending as :func:`execute` ends, with no run directory.

    The last event is the run's one terminal event, made as :func:`execute` makes it: the
    :func:`finished` of the returned totals, the :func:`terminal_event` of what the source
    raised, or a :class:`~solver.events.Failed` when it stopped without either. Nothing is
    recorded and there is no report; closing this generator early closes the source and makes
    no event. For the ranks other than 0, the benchmarks and the tests.

    Args:
        config: the run's configuration.
        cancel: the cancel token handed to the source.
        workdir: handed to the source (the pruned model and checkpoints go there; None: nowhere).
        source: the event source; defaults to :func:`pipeline_source`.
        resume: continue the run from its checkpoint in ``workdir``.
    """
    yield from _drive(_Ending(), config, cancel, source, workdir, resume)


def finished(totals: ev.RunTotals) -> ev.Finished:
    """The terminal event of a run that got to the end: its totals, at ``t = totals.seconds``."""
    fields = {f.name: getattr(totals, f.name) for f in dataclasses.fields(ev.RunTotals)}
    return ev.Finished(t=totals.seconds, **fields)


def terminal_event(error: BaseException, t: float = 0.0, block: int = -1) -> ev.Event:
    """The terminal event of a run that ended by raising ``error``.

    A :class:`~solver.run.stop.RunStopped` brings its own time, block and phase, and its cause
    says why. A cancel becomes :class:`~solver.events.Cancelled`; a
    :class:`~solver.errors.DuoGPTError` a :class:`~solver.events.Failed` with its one line
    (category ``input`` for an :class:`~solver.errors.InputError`); anything else a failure
    marked unexpected. The traceback goes into ``detail``.

    Args:
        error: what the source (or the runner) raised.
        t: the time of the run's last event (used when ``error`` does not say).
        block: the block being pruned (used when ``error`` does not say).
    """
    cause: BaseException = error
    reason = ""
    if isinstance(error, RunStopped):
        t, block = error.t, error.block
        cause = error.__cause__ or error
        reason = f"cancelled {error.phase}"
    if isinstance(cause, RunCancelled):
        return ev.Cancelled(t=t, block=block, reason=reason or str(cause) or "cancelled")
    lines = str(cause).strip().splitlines()
    message = lines[0] if lines else ""
    category = "input" if isinstance(cause, InputError) else "run"
    if not isinstance(cause, DuoGPTError):
        message = f"unexpected {type(cause).__name__}" + (f": {message}" if message else "")
        message += " (see events.jsonl for the traceback; --debug shows it)"
    detail = "".join(traceback.format_exception(cause))
    return ev.Failed(t=t, error=message, block=block, category=category, detail=detail)


def ending_after_error(config: RunConfig, run_dir: RunDir, error: BaseException) -> ev.Event:
    """How a run ended when iterating :func:`execute` raised ``error`` (a bug in the runner).

    Close the :func:`execute` generator first. Returns the terminal event already recorded in
    ``run_dir``; else records the :func:`terminal_event` of ``error`` there now (then the report,
    and the lock is released) and returns it. Never raises for a run directory it cannot read or
    write: what could not be written is said in ``run_dir.notes``.
    """
    try:
        events = run_dir.events()
    except Exception:  # a damaged events.jsonl: record the ending after what is there
        events = []
    recorded = next((e for e in reversed(events) if ev.is_terminal(e)), None)
    if recorded is not None:
        return recorded
    recorder = _Recorder(run_dir)
    recorder.last_t = max((e.t for e in events), default=0.0)
    recorder.block = next((e.block for e in reversed(events) if isinstance(e, ev.BlockStarted)), -1)
    event = recorder.conclude(terminal_event(error, recorder.last_t, recorder.block))
    recorder.finish(config)
    return event


def _drive(
    recorder: _Ending,
    config: RunConfig,
    cancel: CancelToken | None,
    source: Source | None,
    workdir: Path | None,
    resume: bool = False,
) -> Iterator[ev.Event]:
    """Iterate the source, recording each event; turn how it stopped into its terminal event."""
    try:
        extra = {"resume": True} if resume else {}
        events = (source or pipeline_source())(config, cancel, workdir, **extra)
        try:
            totals = yield from _passed_on(iter(events), recorder)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
        if isinstance(totals, ev.RunTotals) and recorder.terminal is None:
            yield recorder.conclude(finished(totals))
    except Exception as exc:  # the run stopped early, or a solver bug: the run must still end
        if recorder.terminal is None:
            yield recorder.conclude(terminal_event(exc, recorder.last_t, recorder.block))
    if recorder.terminal is None:
        yield recorder.conclude(
            ev.Failed(
                t=recorder.last_t,
                error="the solver stopped without saying how the run ended (a solver bug): "
                "events.jsonl holds what it did",
                block=recorder.block,
            )
        )


def _passed_on(events: Iterator[ev.Event], recorder: _Ending) -> Generator[ev.Event, None, object]:
    """Record and yield each event of ``events`` (none after a terminal one); its return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if recorder.record(event):
            yield event


class _Ending:
    """Follows a run's events: how far it got, and its terminal event once there is one.

    Attributes:
        terminal: the terminal event once one was recorded.
        last_t: the time offset of the last event.
        block: the block being pruned (-1 before the first).
    """

    def __init__(self) -> None:
        """Start following a run."""
        self.terminal: ev.Event | None = None
        self.last_t = 0.0
        self.block = -1

    def record(self, event: ev.Event) -> bool:
        """Take an event in; False (and nothing taken) for events after the terminal one."""
        if self.terminal is not None:
            return False
        self.write(event)
        self.last_t = max(self.last_t, event.t)
        if isinstance(event, ev.BlockStarted):
            self.block = event.block
        if ev.is_terminal(event):
            self.terminal = event
        return True

    def write(self, event: ev.Event) -> None:
        """Keep an event somewhere (here: nowhere)."""

    def conclude(self, event: ev.Event) -> ev.Event:
        """Record the terminal event made here and return it."""
        self.record(event)
        return event


class _Recorder(_Ending):
    """Appends events to a run directory and remembers how far the run got.

    Attributes:
        run_dir: where events go.
    """

    def __init__(self, run_dir: RunDir) -> None:
        """Start recording into ``run_dir``."""
        super().__init__()
        self.run_dir = run_dir
        self._finished = False

    def write(self, event: ev.Event) -> None:
        """Append an event to ``events.jsonl``."""
        self.run_dir.append(event)

    def conclude(self, event: ev.Event) -> ev.Event:
        """Record the terminal event made here and return it.

        If it cannot be written, it still ends the recording (and is returned, so the consumer
        shows how the run ended); ``run_dir.notes`` says that the run directory lacks it.
        """
        try:
            self.record(event)
        except Exception as exc:  # a full disk, a removed directory: say so, end anyway
            self.terminal = event
            self.run_dir.notes.append(
                f"could not record how the run ended ({event.kind}) in events.jsonl: "
                f"{type(exc).__name__}: {exc}"
            )
        return event

    def finish(self, config: RunConfig) -> None:
        """End the recording: a cancelled event if none is terminal, the report, the lock."""
        if self._finished:
            return
        self._finished = True
        try:
            if self.terminal is None:
                self.conclude(
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
