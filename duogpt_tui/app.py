"""The interactive workbench ``duogpt-tui``: the Textual App, its factory and the console entry.

The App owns the run (ARCHITECTURE.md, "The Textual side"). Starting takes two thread workers: a
*prepare* worker runs the pre-flight check and creates the run directory (a refusal is one line
on the setup screen, and no run worker or run directory is left behind); then the *run* worker
iterates ``runner.execute`` and posts each solver event as a
:class:`~duogpt_tui.messages.RunEvent`. Workers never touch widgets. The run worker lowers its
own CPU priority (:func:`yield_cpu_to_ui`) so that key presses are answered while it prunes.
One handler appends each event to the :class:`EventLog` and publishes
:attr:`DuoGPTApp.log_changed`; the screens (modes ``setup``, ``run``, ``report``, ``runs``)
redraw from the log. Switching screens never stops the run; cancelling sets the run's
cancel token; the solver stops after the current layer and the runner records the cancelled
event (the app shows only events the runner recorded). A run with several ranks (the form's
Ranks field) differs only in its event source: the launcher of :mod:`duogpt_tui.ranks`, as for
``duogpt prune --nproc N``.

For tests the event source, the pre-flight check and the setup catalog are injectable::

    app = DuoGPTApp(source=fake_run, preflight=lambda config: None, runs_dir=tmp_path)
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.screen import Screen
from textual.signal import Signal
from textual.timer import Timer
from textual.widgets import Input
from textual.worker import Worker, WorkerState, get_current_worker

from duogpt_tui import ranks, runner
from duogpt_tui.eventlog import EventLog
from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.messages import RunEvent, RunLaunched, RunNotice, RunRefused
from duogpt_tui.runstore import EVENTS_FILE, RUNS_ROOT, RunDir, list_runs, read_events
from duogpt_tui.tui_arguments import parse_arguments
from screens.catalog import Catalog
from screens.dialogs import ConfirmDialog, ErrorDialog
from screens.help import HelpScreen
from screens.report import ReportScreen
from screens.run import RunScreen
from screens.runs import RunsScreen
from screens.setup import SetupScreen
from solver.config import RunConfig
from solver.errors import InputError
from solver.events import Event, Failed, is_terminal

FALLBACK_CATALOG = Catalog(
    models={"smollm2-135m": "built-in", "tiny-random": "built-in"},
    texts={"sotu": "built-in", "moby-dick": "built-in", "wikitext2": "dataset", "c4": "dataset"},
)
"""What setup offers until :meth:`Catalog.discover` has run (it imports torch)."""

PALETTE_RUNS = 20
"""The newest runs the command palette offers to open."""

FOLLOW_SECONDS = 1.0
"""How often a run opened from disk that is still running is read again."""

WORKER_NICENESS = 5
"""How much lower than the UI's the run worker's CPU priority is (Linux ``nice`` steps).

The solver's Python code and torch's threads compete with the UI thread for the CPU and the GIL;
measured with ``python -m tests.tui.latency`` on a busy 2-core machine, a screen switch during a
run took ~200 ms at equal priority and ~45 ms (as when idle) at +5. On an otherwise idle machine
the run loses nothing: the UI thread sleeps between key presses."""


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's
    ``/proc/self/status``); elsewhere set to 0o077 and back at once, so that a file another
    thread creates meanwhile is never more open than it would have been."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def yield_cpu_to_ui() -> None:
    """Lower the calling thread's CPU priority by :data:`WORKER_NICENESS` (Linux; else nothing).

    Threads that the calling thread starts later (torch's intra-op pool) inherit the priority.
    """
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the same priority
        pass


class AnyEvent:
    """A cancel token that is set when any of its events is set (``is_set()`` only)."""

    def __init__(self, *events: threading.Event) -> None:
        """Combine ``events``."""
        self.events = events

    def is_set(self) -> bool:
        """True once any event is set."""
        return any(event.is_set() for event in self.events)


class DuoGPTApp(App[int]):
    """The DuoGPT workbench: setup, live run, report and runs, as modes.

    Attributes:
        initial_config: the config the setup form starts from.
        runs_dir: where runs are created and listed.
        event_log: the events of the run shown (the current one or a reopened one).
        log_changed: published with each new event (None when the log was replaced).
        current_config: the shown run's configuration.
        run_path: the shown run's directory.
        last_export: the last report file written.
        opened_runs: the run directories opened in this session (the runs screen lists those
            outside the runs folder too).
    """

    CSS_PATH = "app.tcss"
    TITLE = "DuoGPT workbench"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "setup": SetupScreen,
        "run": RunScreen,
        "report": ReportScreen,
        "runs": RunsScreen,
    }
    DEFAULT_MODE = "setup"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help", key_display="?", id="help"),
        Binding("question_mark", "help_key", "Help", show=False, id="help-key"),
        Binding("f2", "switch_mode('setup')", "Setup", id="mode-setup"),
        Binding("f3", "switch_mode('run')", "Run", id="mode-run"),
        Binding("f4", "switch_mode('report')", "Report", id="mode-report"),
        Binding("f5", "switch_mode('runs')", "Runs", id="mode-runs"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True, id="quit"),
    ]

    catalog: var[Catalog] = var(FALLBACK_CATALOG)
    """What the setup screen offers (models, texts, devices)."""

    start_error: var[str] = var("")
    """Why the last start was refused (one line; empty when it was not)."""

    run_active: var[bool] = var(False, bindings=True)
    """Whether this App's run is being prepared (pre-flight) or its run worker is working."""

    def __init__(
        self,
        *,
        config: RunConfig | None = None,
        runs_dir: Path | str = RUNS_ROOT,
        source: runner.Source | None = None,
        preflight: Callable[[RunConfig], None] | None = None,
        catalog: Catalog | None = None,
        open_path: Path | str | None = None,
    ) -> None:
        """Create the App.

        Args:
            config: prefills the setup form (defaults: ``RunConfig()``).
            runs_dir: where runs are created and listed.
            source: the event source (default: the real solver, ``solver.run.pipeline.run``).
            preflight: the pre-flight check (default: ``solver.run.pipeline.preflight``).
            catalog: the setup pickers' choices (default: discovered on a worker).
            open_path: a run directory to open at start.
        """
        super().__init__()
        self.initial_config = config or RunConfig()
        self.runs_dir = Path(runs_dir)
        self.event_log = EventLog()
        self.log_changed: Signal[Event | None] = Signal(self, "log-changed")
        self.current_config: RunConfig | None = None
        self.run_path: Path | None = None
        self.last_export: Path | None = None
        self.opened_runs: list[Path] = []
        self._source = source
        self._preflight = preflight or runner.preflight
        self._catalog_given = catalog is not None
        if catalog is not None:
            self.set_reactive(DuoGPTApp.catalog, catalog)
        self._open_path = Path(open_path) if open_path is not None else None
        self._token = 0
        self._cancel = threading.Event()
        self._quit_after_run = False
        self._follow_timer: Timer | None = None
        self._follow_count = 0

    # ----------------------------------------------------------------------------- startup

    def on_mount(self) -> None:
        """Look for models in the background; open the run given on the command line."""
        if not self._catalog_given:
            self._discover_catalog()
        if self._open_path is not None:
            self.open_run(self._open_path)

    @work(thread=True, exit_on_error=False, group="catalog", description="find models")
    def _discover_catalog(self) -> Catalog:
        """Find built-in and cached models and the devices (imports torch, so off the UI)."""
        return Catalog.discover()

    # ----------------------------------------------------------------------------- the run

    def start_run(self, config: RunConfig) -> bool:
        """Start pruning with ``config`` (refused while a run is active).

        The prepare worker runs the pre-flight check and creates the run directory; the run
        worker starts only when both succeeded (:meth:`_run_launched`).

        Returns:
            Whether the prepare worker was started.
        """
        if self.run_active:
            self.start_error = self.busy_reason()
            self.notify(self.start_error, title="Cannot start", severity="warning")
            return False
        self.start_error = ""
        self._token += 1
        self._cancel = threading.Event()
        self.run_active = True
        self._prepare_worker(config, self._token)
        return True

    def busy_reason(self) -> str:
        """Why a run cannot start now: one run at a time, and where the current one is."""
        where = self.event_log.activity() if self.event_log.status == "running" else "starting"
        return (
            f"cannot start: a run is in progress ({where}); one run at a time: watch it on "
            "the run screen (F3), or cancel it there (c) first"
        )

    def cancel_run(self) -> bool:
        """Ask the run to stop: it ends cancelled after the current layer, or at the next batch
        of an evaluation (the final one included).

        Returns:
            Whether a run was there to cancel (when it ended meanwhile, a notice says how).
        """
        if not self.run_active:
            ended = self.event_log.status
            said = f"the run already {ended}" if ended not in ("empty", "running") else "no run"
            self.notify(f"Nothing to cancel: {said}.", title="Cancel", severity="warning")
            return False
        if not self._cancel.is_set():
            self._cancel.set()
            when = (
                "at the next batch of the final evaluation"
                if self.event_log.final_evaluation
                else "after the current layer"
            )
            self.notify(f"Cancelling {when}…", title="Cancel")
        return True

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="prepare",
        description="pre-flight check",
    )
    def _prepare_worker(self, config: RunConfig, token: int) -> None:
        """The prepare worker: pre-flight check, then the run directory (no widgets here)."""
        try:
            self._preflight(config)
            run_dir = RunDir.create(config, runs_root=self.runs_dir)
        except InputError as error:
            self.post_message(RunRefused(str(error), token))
            return
        self.post_message(RunLaunched(run_dir.path, config, token, run_dir))

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="prune",
        description="DuoGPT pruning run",
    )
    def _run_worker(
        self, config: RunConfig, run_dir: RunDir, token: int, cancel: threading.Event
    ) -> None:
        """The run worker: iterate the runner and post every event (no widgets here).

        Every event posted is one the runner recorded, the terminal one included: when the
        runner itself raises (a bug), the run's ending is what :func:`runner.ending_after_error`
        finds or records in the run directory, and the error still goes to a dialog.
        """
        worker = get_current_worker()
        yield_cpu_to_ui()
        noted = len(run_dir.notes)
        # with several ranks, the launcher's ranks are the source (as for `duogpt prune`)
        source = self._source or ranks.source_for(config)
        events = runner.execute(
            config, run_dir, cancel=AnyEvent(cancel, worker.cancelled_event), source=source
        )
        try:
            for event in events:
                self.post_message(RunEvent(event, token))
        except Exception as error:
            events.close()  # the runner records its ending first
            self.post_message(RunEvent(runner.ending_after_error(config, run_dir, error), token))
            raise
        finally:
            for note in run_dir.notes[noted:]:
                self.post_message(RunNotice(note, token))

    @on(RunRefused)
    def _run_refused(self, message: RunRefused) -> None:
        """The pre-flight check or the run store said no: one line on the setup screen."""
        if message.token == self._token:
            self.run_active = False
            self.start_error = f"cannot start: {message.error}"
            self.notify(message.error, title="Cannot start", severity="error")

    @on(RunLaunched)
    def _run_launched(self, message: RunLaunched) -> None:
        """The run has a directory: start the run worker and show a fresh log on the run screen."""
        run_dir = message.run_dir or RunDir(message.path)
        if message.token != self._token:  # a start that was superseded: free its directory
            run_dir.release()
            return
        self._stop_following()
        self.run_path = message.path
        self.current_config = message.config
        self.event_log.reset(notices=run_dir.notes)
        self.log_changed.publish(None)
        self.switch_mode("run")
        self._run_worker(message.config, run_dir, message.token, self._cancel)

    @on(RunNotice)
    def _run_notice(self, message: RunNotice) -> None:
        """A notice of the run store: into the run's log."""
        if message.token == self._token:
            self.add_notice(message.text)

    def add_notice(self, text: str) -> None:
        """Add a notice to the run's log (shown in the run screen's log) and tell the screens."""
        self.event_log.add_notice(text)
        self.log_changed.publish(None)

    @on(RunEvent)
    def _run_event(self, message: RunEvent) -> None:
        """Append the event to the log and tell the screens."""
        if message.token != self._token:
            return
        self.add_event(message.event)
        if is_terminal(message.event):
            self._announce_end(message.event)
            if self._quit_after_run:
                self.exit(0)

    def add_event(self, event: Event) -> None:
        """Append one event to the log and publish it (the one place the log grows)."""
        self.event_log.append(event)
        self.log_changed.publish(event)

    def _announce_end(self, event: Event) -> None:
        """Say how the run ended."""
        if isinstance(event, Failed):
            self.notify(event.error, title="Run failed", severity="error", timeout=10)
        else:
            self.notify(self.event_log.activity(), title=f"Run {event.kind}")

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        """Track the run worker; an unexpected error goes to an error dialog, not a traceback."""
        worker = event.worker
        if worker.group == "catalog":
            if event.state == WorkerState.SUCCESS and isinstance(worker.result, Catalog):
                self.catalog = worker.result
            elif event.state == WorkerState.ERROR:
                self.notify(f"Could not look for models: {worker.error}", severity="warning")
            return
        if worker.group == "prepare":
            if event.state == WorkerState.ERROR:  # not an InputError: a bug or an OS failure
                self.run_active = False
                text = f"{type(worker.error).__name__}: {worker.error}"
                self.start_error = f"cannot start: {text}"
                self.push_screen(ErrorDialog("The run could not be prepared", text))
            return
        if worker.group != "prune" or not worker.is_finished:
            return
        self.run_active = any(w.group == "prune" and not w.is_finished for w in self.workers)
        if event.state == WorkerState.ERROR:
            error = worker.error
            text = f"{type(error).__name__}: {error}"
            self.push_screen(ErrorDialog("The run stopped unexpectedly", text))
        if self._quit_after_run and not self.run_active:
            self.exit(0)

    # ----------------------------------------------------------------------------- past runs

    def open_run(self, path: Path | str) -> bool:
        """Show a run directory's events in the run and report screens.

        A run still being written by another process is followed (read again every second).

        Returns:
            Whether the run was opened.
        """
        path = Path(path)
        same = self.run_path is not None and path.resolve() == self.run_path.resolve()
        if same and (self.run_active or self.event_log.terminal is not None):
            self.switch_mode("run")
            return True
        if self.run_active:
            self.notify(
                "A run is in progress: wait for it to end (or cancel it) before opening another.",
                severity="warning",
            )
            return False
        try:
            run_dir = RunDir.open(path)
            events = run_dir.events()
            status = run_dir.status()
        except InputError as error:
            self.notify(str(error), title="Cannot open the run", severity="error")
            return False
        try:
            self.current_config = run_dir.config()
        except InputError:
            self.current_config = None
        self._stop_following()
        self.run_path = path
        if path not in self.opened_runs:
            self.opened_runs.append(path)
        notices = list(run_dir.notes)
        if status == "interrupted":
            notices.append(
                f"this run was interrupted (its process is gone): `duogpt prune --resume {path}` "
                "continues it from its last complete block"
            )
        self.event_log.reset(events, notices)
        self.log_changed.publish(None)
        if status == "running":
            self._follow_count = len(events)
            self._follow_timer = self.set_interval(FOLLOW_SECONDS, self._follow)
        self.switch_mode("run")
        return True

    def _follow(self) -> None:
        """Read new events of a run that another process is writing."""
        if self.run_path is None:
            self._stop_following()
            return
        try:
            events = read_events(self.run_path / EVENTS_FILE)
        except InputError:
            return
        for event in events[self._follow_count :]:
            self.add_event(event)
        self._follow_count = len(events)
        if self.event_log.terminal is not None or not RunDir(self.run_path).lock_owner_alive():
            self._stop_following()

    def _stop_following(self) -> None:
        """Stop reading a run from disk."""
        if self._follow_timer is not None:
            self._follow_timer.stop()
            self._follow_timer = None

    def export_report(self, text: str, path: Path) -> Path:
        """Write a report (atomically) and return where it went, readable as any new file
        (the mode the umask gives, not the temporary file's 0600).

        Raises:
            InputError: the file cannot be written.
        """
        where = RunDir(self.run_path or path.parent).write_report(text, path, overwrite=True)
        with contextlib.suppress(OSError):
            where.chmod(0o666 & ~current_umask())
        return where

    def reopen_in_setup(self, path: Path | str | None = None) -> bool:
        """Fill the setup form with a run's configuration and show it.

        Args:
            path: the run directory (default: the run shown).

        Returns:
            Whether the form was filled.
        """
        target = Path(path) if path is not None else self.run_path
        config = self.current_config if path is None else None
        if config is None:
            if target is None:
                self.notify("No run to take the settings from.", severity="warning")
                return False
            try:
                config = RunDir(target).config()
            except InputError as error:
                self.notify(str(error), title="Cannot read the settings", severity="error")
                return False
        self.initial_config = config
        self.switch_mode("setup")
        self.call_after_refresh(self._fill_setup, config)
        return True

    def _fill_setup(self, config: RunConfig) -> None:
        """Put ``config`` into the setup form (once it is the screen shown)."""
        screen = self.screen
        if isinstance(screen, SetupScreen):
            screen.fill(config)
            self.notify("The form holds the run's settings: change them and start.", title="Setup")

    # ----------------------------------------------------------------------------- actions

    def action_help(self) -> None:
        """Show the help screen."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_help_key(self) -> None:
        """``?`` shows help (outside text fields: there it types a ``?``, see check_action)."""
        self.action_help()

    async def action_quit(self) -> None:
        """Quit; while a run is in progress, ask first and cancel it cleanly."""
        if not self.run_active:
            self.exit(0)
            return

        def answered(yes: bool | None) -> None:
            """Cancel and quit once the run has stopped, if the user said yes."""
            if yes:
                self._quit_after_run = True
                self.cancel_run()

        self.push_screen(
            ConfirmDialog(
                "Quit while a run is in progress?",
                "The run is cancelled after the current layer (its directory stays valid and is "
                "marked cancelled); the workbench closes when it has stopped.",
                yes="Cancel run and quit",
                no="Keep running",
            ),
            answered,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Dim the key of the mode already shown."""
        if action == "switch_mode" and parameters and parameters[0] == self.current_mode:
            return None
        # in a text field `?` is typed, not help
        return not (action == "help_key" and isinstance(self.focused, Input))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette: the App's own commands (actions, then places, then the runs to
        open), then Textual's."""
        yield SystemCommand(
            "Start run", "Start pruning with the setup form's settings", self._start
        )
        if self.run_active:
            yield SystemCommand(
                "Cancel run", "Stop the run (asks first)", self._on_screen("run", "cancel_run")
            )
        yield SystemCommand(
            "Export report", "Write the run's report to a file", self._on_screen("report", "export")
        )
        yield SystemCommand(
            "Compare runs", "Compare the runs marked on the runs screen", self._compare
        )
        if self.run_path is not None or self.current_config is not None:
            yield SystemCommand(
                "Reopen in setup", "Fill the setup form with the shown run's settings", self._reopen
            )
        yield SystemCommand("Setup", "Choose the model, data and sparsities", self._go("setup"))
        yield SystemCommand("Run", "Watch the run: progress, plots, layers", self._go("run"))
        yield SystemCommand("Report", "The run's Markdown report", self._go("report"))
        yield SystemCommand("Runs", "Past runs: open, filter, delete and compare", self._go("runs"))
        yield SystemCommand("Help", "Keys and screens", self.action_help)
        for summary in list_runs(self.runs_dir)[:PALETTE_RUNS]:
            yield SystemCommand(
                f"Open run {summary.run_id}",
                f"{summary.status} · {summary.model} · {summary.method}",
                self._opener(summary.path),
            )
        yield from super().get_system_commands(screen)

    def _go(self, mode: str) -> Callable[[], None]:
        """A callback that switches to ``mode``."""

        def go() -> None:
            self.switch_mode(mode)

        return go

    def _on_screen(self, mode: str, action: str) -> Callable[[], None]:
        """A callback that switches to ``mode`` and runs the screen's ``action`` there."""

        def run() -> None:
            self.switch_mode(mode)
            self.call_after_refresh(self._screen_action, action)

        return run

    def _screen_action(self, action: str) -> None:
        """Run ``action`` on the screen shown (when it has it)."""
        method = getattr(self.screen, f"action_{action}", None)
        if callable(method):
            method()

    def _start(self) -> None:
        """Start from the setup form (which explains a refusal)."""
        self._on_screen("setup", "start")()

    def _compare(self) -> None:
        """Compare the runs marked on the runs screen."""
        self._on_screen("runs", "compare")()

    def _reopen(self) -> None:
        """Reopen the shown run's settings in setup."""
        self.reopen_in_setup()

    def _opener(self, path: Path) -> Callable[[], None]:
        """A callback that opens the run directory ``path``."""

        def open_it() -> None:
            self.open_run(path)

        return open_it


# --------------------------------------------------------------------------------- console


def make_app(argv: Sequence[str] | None = None, **overrides: object) -> DuoGPTApp:
    """The App for a command line (shared by :func:`main` and the tests).

    The arguments are parsed by :func:`duogpt_tui.tui_arguments.parse_arguments` (the run
    options of the registry, as for ``duogpt prune``).

    Args:
        argv: the arguments (without the program name); None reads ``sys.argv``.
        overrides: keyword arguments for :class:`DuoGPTApp` (``source``, ``catalog``...).

    Raises:
        InputError: a bad option, or RUN_DIR is not a run directory.
        SystemExit: ``--help`` was given.
    """
    options = parse_arguments(argv)
    if options["open_path"] is not None:
        run_dir = RunDir.open(options["open_path"])  # a one-line error before the screen is up
        if options["config"] == RunConfig():  # no run option given: setup starts from the run's
            with contextlib.suppress(InputError):
                options["config"] = run_dir.config()
    options.update(overrides)
    return DuoGPTApp(**options)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry ``duogpt-tui``: run the workbench; bad input is one ``error:`` line, exit 2."""
    try:
        app = make_app(argv)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(ExitCode.INPUT) from None
    app.run()
    raise SystemExit(app.return_code or ExitCode.OK)


if __name__ == "__main__":
    main()
