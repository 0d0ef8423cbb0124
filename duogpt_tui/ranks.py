"""Runs with several ranks: the launcher behind ``--nproc N``, and what each rank does.

``duogpt prune --nproc N`` and a run started from the setup screen with N ranks take the same
path: the run directory is made, locked and recorded by this process, exactly as for one rank,
and only the event source differs. :func:`source` (a :data:`duogpt_tui.runner.Source`) launches
the N ranks with torch.distributed's elastic agent (the launcher behind ``torchrun``; here it runs
on a thread of this process, as ``torchrun --standalone`` would), and yields the events of rank
0, which it reads from a file in a private launch folder while the ranks work:

* every rank is ``python -m duogpt_tui.ranks FOLDER``: it runs the pipeline through
  :func:`duogpt_tui.runner.stream` (so its ending is made by the runner, as always); rank 0
  appends each event to ``FOLDER/events.jsonl``; every rank ends with exit code 0 once its run
  ended in any way, writing its terminal event to ``FOLDER/rank<r>.json``. Rank 0 alone writes
  into the run directory (the pruned model, the checkpoints); the others only read it.
* a cancel (Ctrl-C, SIGTERM, the TUI's cancel) makes the file ``FOLDER/cancel``, which every rank
  checks as its cancel token; the ranks agree on it at their next group of layers and end
  cancelled. The ranks run in sessions of their own, so a terminal's Ctrl-C reaches this process
  alone. A rank whose launcher is gone stops the same way.
* a rank that dies (a non-zero exit, or a signal) is seen by the agent within
  :data:`MONITOR_S`; it stops the other ranks at once, and the run fails with one line naming the
  rank and how it died. A rank that hangs makes the others fail after
  :data:`solver.run.distributed.TIMEOUT_S` seconds in a collective. Either way
  ``--resume RUN_DIR`` continues the run from its last checkpointed block, with any ``--nproc``.
* the ranks' own output goes to ``FOLDER/logs`` (never over the TUI's screen or the CLI's
  progress); the folder is removed after the run, unless a rank died: the error names its log.

Under a ``torchrun`` that the user started (``torchrun --nproc-per-node N -m duogpt_tui.cli prune
...``), rank 0 is an ordinary ``duogpt prune`` that makes the run directory and the other ranks
run the pipeline without one (:func:`run_quietly`).

Test-only fault injection: ``DUOGPT_TEST_KILL_RANK=R:block=B`` makes rank ``R`` kill itself
(SIGKILL) when it gets the first solved layer of block ``B``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from duogpt_tui.exitcodes import ExitCode
from duogpt_tui.progress import cancel_on_signals
from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError, RunError
from solver.run.stop import NEVER, CancelToken, RunCancelled

if TYPE_CHECKING:
    from duogpt_tui.runner import Source

__all__ = [
    "KILL_VARIABLE",
    "MONITOR_S",
    "launched_world",
    "rank",
    "run_quietly",
    "source",
    "source_for",
]

KILL_VARIABLE = "DUOGPT_TEST_KILL_RANK"
"""Test-only: ``R:block=B`` makes rank ``R`` SIGKILL itself at the first solved layer of block B."""

MONITOR_S = 0.1
"""How often the agent looks at the ranks: a rank that died is seen within this many seconds."""

POLL_S = 0.1
"""How often the launcher reads rank 0's new events and checks the cancel token."""

STOP_WAIT_S = 30.0
"""How long the launcher waits for the agent once it stopped the ranks (a second Ctrl-C)."""

LAUNCH_FILE = "launch.json"
EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "cancel"
LOGS_DIR = "logs"
_AGENT_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


def launched_world() -> int:
    """The number of ranks this process was launched with (1 outside ``torchrun``).

    Read from the environment here, so that ``duogpt --help`` loads no torch.
    """
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank (0 outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0") or 0)


def source_for(config: RunConfig) -> Source | None:
    """The event source for ``config``: :func:`source` when it asks for ranks that this process
    must launch, else None (the runner's default, the pipeline in this process)."""
    return source if config.nproc > 1 and launched_world() == 1 else None


# --------------------------------------------------------------------- the launcher


def source(
    config: RunConfig,
    cancel: CancelToken | None = None,
    workdir: Path | None = None,
    resume: bool = False,
) -> Generator[ev.Event, None, None]:
    """Run ``config`` as ``config.nproc`` ranks and yield rank 0's events, its terminal one last.

    A :data:`duogpt_tui.runner.Source` (see the module text). Rank 0's terminal event is held
    until every rank has ended: when a rank died, the run fails with the launcher's account of
    it instead (raised, so that the runner makes the terminal event).

    Raises:
        RunError: a rank died, or the ranks ended without rank 0 saying how the run ended.
        InputError: another rank found bad input that rank 0 did not.
        RunCancelled: the run was cancelled and the ranks stopped before saying so.
    """
    token = cancel or NEVER
    launch = _Launch(config, workdir, resume)
    keep = False  # the launch folder, when the error names a rank's log in it
    try:
        launch.start()
        ending: ev.Event | None = None
        for event in launch.follow(token):
            if ev.is_terminal(event):
                ending = event  # held until every rank ended
            else:
                yield event
        error = launch.failure(ending, token)
        if error is not None:
            keep = launch.log_named
            raise error
        assert ending is not None
        yield ending
    finally:
        launch.stop()
        if not keep:
            shutil.rmtree(launch.folder, ignore_errors=True)


class _Launch:
    """One launch of the ranks: its folder, the agent's thread, and how the ranks ended.

    Attributes:
        folder: the private launch folder (see the module text).
        nproc: how many ranks.
        died: the rank that died first and how (``(rank, "killed by SIGKILL")``), once known.
        block: the last block rank 0 started.
        log_named: whether the run's error names a rank's log (then the folder is kept).
        again: what the user can do after a rank died (resume, or start again).
    """

    def __init__(self, config: RunConfig, workdir: Path | None, resume: bool) -> None:
        """Write the launch folder for ``config``."""
        self.folder = Path(tempfile.mkdtemp(prefix="duogpt-ranks-"))
        self.nproc = config.nproc
        self.died: tuple[int, str] | None = None
        self.block = -1
        self.log_named = False
        self.again = (
            f"continue the run with `duogpt prune --resume {workdir}` (from its last "
            "checkpointed block)"
            if config.checkpoints and workdir is not None
            else "start the run again (it kept no checkpoints to resume from)"
        )
        self._failures: dict[int, str] = {}
        self._crash: BaseException | None = None
        self._thread: threading.Thread | None = None
        threads = os.environ.get("OMP_NUM_THREADS") or str(
            max(1, (os.cpu_count() or 1) // self.nproc)
        )
        spec = {
            "config": config.to_dict(),
            "workdir": None if workdir is None else str(Path(workdir).resolve()),
            "resume": resume,
            "parent": os.getpid(),
            "threads": int(threads),
        }
        (self.folder / LAUNCH_FILE).write_text(json.dumps(spec), encoding="utf-8")
        (self.folder / EVENTS_FILE).touch()

    def start(self) -> None:
        """Start the agent (and so the ranks) on a thread of this process."""
        self._thread = threading.Thread(target=self._agent, name="duogpt-ranks", daemon=True)
        self._thread.start()

    def _agent(self) -> None:
        """The agent's thread: launch the ranks and wait for all of them (never raises)."""
        from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        spec = LaunchConfig(  # torchrun --standalone --nproc-per-node N --max-restarts 0
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=self.nproc,
            run_id=str(uuid.uuid4()),
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            max_restarts=0,
            monitor_interval=MONITOR_S,
            logs_specs=DefaultLogsSpecs(log_dir=str(self.folder / LOGS_DIR), redirects=Std.ALL),
        )
        try:
            with _agent_log(self.folder / "agent.log"):
                elastic_launch(spec, sys.executable)("-m", "duogpt_tui.ranks", str(self.folder))
        except ChildFailedError as failed:
            for index, failure in failed.failures.items():
                signalled = failure.exitcode < 0
                how = f"killed by {failure.signal_name()}" if signalled else ""
                self._failures[index] = how or f"exit code {failure.exitcode}"
        except BaseException as error:  # the agent itself failed (rendezvous, a bug)
            self._crash = error

    def follow(self, cancel: CancelToken) -> Iterator[ev.Event]:
        """Rank 0's events as it writes them, until every rank ended; makes the cancel file
        once ``cancel`` is set."""
        assert self._thread is not None
        offset = 0
        pending = b""
        while True:
            ended = not self._thread.is_alive()
            if cancel.is_set():
                self.cancel()
            with (self.folder / EVENTS_FILE).open("rb") as events:
                events.seek(offset)
                chunk = events.read()
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    event = ev.from_json(line.decode("utf-8"))
                    if isinstance(event, ev.BlockStarted):
                        self.block = event.block
                    yield event
            if ended:
                return
            time.sleep(POLL_S)

    def cancel(self) -> None:
        """Ask every rank to stop (they agree on it at their next group of layers)."""
        (self.folder / CANCEL_FILE).touch()

    def failure(self, ending: ev.Event | None, cancel: CancelToken) -> Exception | None:
        """Why the run must end otherwise than with rank 0's ``ending`` (None: it may not)."""
        if self._crash is not None:
            error = RunError(
                f"the launcher of the ranks failed: {type(self._crash).__name__}: {self._crash}"
            )
            error.__cause__ = self._crash
            return error
        if self._failures:  # the agent stops the survivors with SIGTERM: look past them
            first = min(self._failures, key=lambda r: (self._failures[r].endswith("SIGTERM"), r))
            self.died = (first, self._failures[first])
        if isinstance(ending, ev.Finished | ev.Cancelled):
            return None
        if cancel.is_set() or (self.folder / CANCEL_FILE).exists():
            return RunCancelled("cancelled while the ranks ran")
        if self.died is not None:
            where = f" in block {self.block}" if self.block >= 0 else ""
            log = self._log(self.died[0])
            self.log_named = bool(log)
            return RunError(
                f"rank {self.died[0]} died ({self.died[1]}){where}; the other ranks were "
                f"stopped: {self.again}" + (f"; the rank's output: {log}" if log else "")
            )
        if isinstance(ending, ev.Failed) and _lost(ending):
            blame = self._blame()
            if blame is not None:
                return blame
        if ending is None:
            return RunError("the ranks ended without rank 0 saying how the run ended")
        return None

    def _blame(self) -> Exception | None:
        """The failure of a rank other than 0 that made rank 0 lose it (None: none found)."""
        for index in range(1, self.nproc):
            path = self.folder / f"rank{index}.json"
            if not path.is_file():
                continue
            ended = ev.from_json(path.read_text(encoding="utf-8"))
            if isinstance(ended, ev.Failed) and not _lost(ended):
                kind = InputError if ended.category == "input" else RunError
                return kind(f"rank {index}: {ended.error}")
        return None

    def _log(self, index: int) -> str:
        """The path of rank ``index``'s stderr log when it holds anything ("" otherwise)."""
        for path in (self.folder / LOGS_DIR).glob(f"*/attempt_*/{index}/stderr.log"):
            if path.stat().st_size:
                return str(path)
        return ""

    def stop(self) -> None:
        """Stop the ranks if they still run (the consumer stopped early), and the agent."""
        if self._thread is None or not self._thread.is_alive():
            return
        self.cancel()
        for path in self.folder.glob("rank*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(path.read_text()), signal.SIGTERM)
        self._thread.join(STOP_WAIT_S)


def _lost(ending: ev.Failed) -> bool:
    """Whether a rank failed because it lost the others (rather than for a reason of its own)."""
    return " lost the other ranks " in ending.error


@contextlib.contextmanager
def _agent_log(path: Path) -> Iterator[None]:
    """While inside, the agent's log lines go to ``path`` (never to the terminal)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    saved = []
    for name in _AGENT_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate))
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, propagate in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
        handler.close()


# --------------------------------------------------------------------- a launched rank


class _Watch:
    """A launched rank's cancel token: the launch's cancel file, or its launcher gone."""

    def __init__(self, path: Path, parent: int) -> None:
        """Watch ``path`` and the launcher process ``parent``."""
        self.path = path
        self.parent = parent

    def is_set(self) -> bool:
        """True once the cancel file exists or the launcher is gone."""
        return self.path.exists() or os.getppid() != self.parent


def _kill_point(me: int) -> int | None:
    """The block at whose first solved layer this rank kills itself (:data:`KILL_VARIABLE`)."""
    text = os.environ.get(KILL_VARIABLE, "")
    who, _, where = text.partition(":block=")
    if not who.strip().isdigit() or int(who) != me or not where.strip().isdigit():
        return None
    return int(where)


def _rank_main(folder: Path) -> int:
    """A launched rank (see the module text); 0 once its run ended, whichever way."""
    spec = json.loads((folder / LAUNCH_FILE).read_text(encoding="utf-8"))
    os.environ["OMP_NUM_THREADS"] = str(spec["threads"])  # before torch loads
    from duogpt_tui.runner import stream

    me = rank()
    (folder / f"rank{me}.pid").write_text(str(os.getpid()), encoding="utf-8")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher cancels through the file
    config = RunConfig.from_dict(spec["config"])
    workdir = None if spec["workdir"] is None else Path(spec["workdir"])
    cancel = _Watch(folder / CANCEL_FILE, int(spec["parent"]))
    kill_at = _kill_point(me)
    ending: ev.Event | None = None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context((folder / EVENTS_FILE).open("a")) if me == 0 else None
        for event in stream(config, cancel, workdir, resume=bool(spec["resume"])):
            if out is not None:
                out.write(ev.to_json(event) + "\n")
                out.flush()
            if kill_at is not None and isinstance(event, ev.LayerSolved) and event.block >= kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # the test of a dying rank
            ending = event
    if ending is not None:
        (folder / f"rank{me}.json").write_text(ev.to_json(ending), encoding="utf-8")
    return 0


# --------------------------------------------------------------------- under the user's torchrun


def run_quietly(config: RunConfig, workdir: Path | None = None, resume: bool = False) -> ExitCode:
    """A rank other than 0 under the user's ``torchrun``: run without a run directory.

    The run ends as every run does, with the terminal event the runner makes
    (:func:`duogpt_tui.runner.stream`); only its exit code and a failure's one line show.
    ``workdir`` is read (a resumed run's checkpoint), never written.
    """
    from duogpt_tui.runner import stream

    cancel = threading.Event()
    ending: ev.Event | None = None
    with cancel_on_signals(cancel):
        for event in stream(config, cancel, workdir, resume=resume):
            ending = event
    if isinstance(ending, ev.Cancelled):
        return ExitCode.CANCELLED
    if isinstance(ending, ev.Failed):
        print(f"error (rank {rank()}): {ending.error}", file=sys.stderr)
        return ExitCode.INPUT if ending.category == "input" else ExitCode.FAILED
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(_rank_main(Path(sys.argv[1])))
