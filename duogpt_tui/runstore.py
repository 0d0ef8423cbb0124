"""The run directory: the source of truth for every run (ARCHITECTURE.md, "One event stream").

A run directory holds ``config.json`` (the :class:`~solver.config.RunConfig`), ``events.jsonl``
(one event per line, flushed as it happens), ``report.md`` and the pruned model (``model/``).
While a run writes to it, ``run.lock`` names its owner (pid, host, start time), so a second
writer is refused and a run killed with ``kill -9`` reads back as *interrupted*.

This module owns the names of those files (the ones the solver needs too come from
:mod:`solver.io.run_files` and are re-exported here); nothing else spells them out. A run is read
back as a :class:`~duogpt_tui.runview.RunView` (:meth:`RunDir.view`); a corrupt line in
``events.jsonl`` is skipped and reported in the view's warnings rather than making the run
unreadable (:mod:`duogpt_tui.eventfile`).

Only plain files and JSON live here; no torch, no textual, no rich.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from duogpt_tui.eventfile import EventFile as EventFile
from duogpt_tui.eventfile import json_object, read_event_file
from duogpt_tui.eventfile import read_events as read_events
from duogpt_tui.runview import RunView
from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError
from solver.io.run_files import ACT_SETTINGS_FILE as ACT_SETTINGS_FILE  # re-exported
from solver.io.run_files import CHECKPOINT_STATE as CHECKPOINT_STATE  # re-exported
from solver.io.run_files import CHECKPOINTS_DIR as CHECKPOINTS_DIR  # re-exported
from solver.io.run_files import EVENTS_FILE as EVENTS_FILE  # re-exported
from solver.io.run_files import MODEL_DIR as MODEL_DIR  # re-exported

RUNS_ROOT = Path("runs")
"""Where new runs go by default (relative to the working directory)."""

CONFIG_FILE = "config.json"
"""The run's configuration (``RunConfig.to_dict()``)."""

REPORT_FILE = "report.md"
"""The run's Markdown report."""

LOCK_FILE = "run.lock"
"""Who is writing the run (pid, host, start time), while a run writes it."""

COMPARISON_FILE = "comparison.md"
"""In a runs folder: where a comparison of runs is exported by default."""

RUN_FILES = (CONFIG_FILE, EVENTS_FILE, REPORT_FILE, LOCK_FILE)
"""The files a run writes; ``--overwrite`` removes exactly these (and :data:`RUN_DIRS`)."""

RUN_DIRS = (MODEL_DIR, CHECKPOINTS_DIR)
"""The folders a run writes."""

MIN_FREE_BYTES = 100 * 2**20
"""A new run is refused on a disk with less free space than this."""


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs list (see :func:`list_runs`).

    Attributes:
        path: the run directory.
        run_id: the directory's name.
        status: ``finished``, ``cancelled``, ``failed``, ``running``, ``interrupted`` or
            ``unreadable``.
        model: the model's name.
        method: the pruning method.
        pattern: ``unstructured`` or ``N:M``.
        weight_sparsity: achieved weight sparsity (None before any layer was pruned).
        act_sparsity: measured activation sparsity (None before any layer was pruned).
        ppl_dense: dense perplexity, when measured.
        ppl: the pruned model's perplexity, when measured.
        started: when the run directory was created (local time, ``YYYY-mm-dd HH:MM:SS``).
        seconds: the run's wall time so far (None without events).
        warnings: what was wrong with the run's files (see :attr:`RunView.warnings`).
    """

    path: Path
    run_id: str
    status: str
    model: str
    method: str
    pattern: str
    weight_sparsity: float | None
    act_sparsity: float | None
    ppl_dense: float | None
    ppl: float | None
    started: str
    seconds: float | None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the path as a string)."""
        return {
            "path": str(self.path),
            "run_id": self.run_id,
            "status": self.status,
            "model": self.model,
            "method": self.method,
            "pattern": self.pattern,
            "weight_sparsity": self.weight_sparsity,
            "act_sparsity": self.act_sparsity,
            "ppl_dense": self.ppl_dense,
            "ppl": self.ppl,
            "started": self.started,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
        }


@dataclass
class RunDir:
    """A run directory, opened for reading or created (and locked) for writing.

    Attributes:
        path: the directory.
        notes: notices for the user gathered while creating or reading it (a stale lock
            taken over, corrupt lines of ``events.jsonl`` skipped).
        resumed_block: for :meth:`resume`, the last complete block the run continues after.
    """

    path: Path
    notes: list[str] = field(default_factory=list)
    resumed_block: int | None = None
    _owns_lock: bool = field(default=False, repr=False)
    _events_file: Any = field(default=None, repr=False)

    # ----------------------------------------------------------------- creating and opening

    @classmethod
    def create(
        cls,
        config: RunConfig,
        out: Path | None = None,
        runs_root: Path = RUNS_ROOT,
        overwrite: bool = False,
    ) -> RunDir:
        """Make (or take over) a run directory for ``config``, lock it and write ``config.json``.

        Args:
            config: the run's configuration.
            out: the directory; None makes ``runs_root/<YYYYmmdd-HHMMSS>-<method>-<model>``.
            runs_root: where a default directory goes.
            overwrite: replace the run that ``out`` already holds (its own files only).

        Returns:
            The locked run directory.

        Raises:
            InputError: ``out`` holds another run (without ``overwrite``), is a non-empty folder
                that is not a run, is a file, is not writable, sits on a full disk, or is in use.
        """
        is_run = False
        if out is None:
            path, created = _new_default_dir(Path(runs_root), config)
        else:
            path = Path(out)
            is_run = _check_out_dir(path, overwrite)
            created = not path.exists()
            _make_dir(path)
        try:
            _check_writable(path)
            _check_free_space(path)
            run_dir = cls(path)
            run_dir._acquire_lock()
        except BaseException:
            if created:
                _remove_empty_tree(path)
            raise
        try:
            if is_run:
                run_dir._remove_previous_run()
            _atomic_write(path / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
            (path / EVENTS_FILE).touch()
        except OSError as exc:
            run_dir.release()
            raise InputError(f"cannot write the run directory {path}: {_os_reason(exc)}") from exc
        return run_dir

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """Open an existing run directory for reading.

        Raises:
            InputError: ``path`` is not a run directory.
        """
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path} is not a run directory (no such folder)")
        if not _holds_run(path):
            raise InputError(
                f"{path} is not a run directory (no {CONFIG_FILE} or {EVENTS_FILE} in it)"
            )
        return cls(path)

    @classmethod
    def resume(cls, path: Path) -> RunDir:
        """Lock a stopped run's directory to continue it from its last checkpoint.

        The run may have been cancelled, have failed, or have been killed (its stale lock is
        taken over with a note). ``events.jsonl`` is rewritten atomically to keep the events up
        to and including the last block-finished event whose block is at most the checkpoint's:
        the old final event and any partly pruned block are dropped, so that the resumed run's
        events (appended after them) make one valid story. The stale ``report.md`` is removed;
        the resumed run writes a new one.

        Args:
            path: the run directory.

        Returns:
            The locked run directory, with :attr:`resumed_block` set.

        Raises:
            InputError: ``path`` is not a run directory, is in use, is not writable, holds a
                finished run, or has no usable checkpoint.
        """
        run_dir = cls.open(path)
        path = run_dir.path
        _check_writable(path)
        _check_free_space(path)
        run_dir._acquire_lock()
        try:
            terminal = RunView.of(run_dir.events()).terminal
            if isinstance(terminal, ev.Finished):
                raise InputError(
                    f"{path} holds a finished run: there is nothing to resume (start a new run)"
                )
            block = _checkpoint_block(path)
            run_dir._keep_events_until(block)
            with contextlib.suppress(FileNotFoundError):
                (path / REPORT_FILE).unlink()
        except BaseException:
            run_dir.release()
            raise
        run_dir.resumed_block = block
        return run_dir

    def write_config(self, config: RunConfig) -> None:
        """Replace ``config.json`` atomically (a resumed run with changed options).

        Raises:
            InputError: the file cannot be written.
        """
        try:
            _atomic_write(self.path / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise InputError(f"cannot write {self.path / CONFIG_FILE}: {_os_reason(exc)}") from exc

    # ----------------------------------------------------------------- writing

    def append(self, event: ev.Event) -> None:
        """Append one event as a JSON line, flushed (and fsynced unless it is progress).

        A process killed at any moment leaves ``events.jsonl`` valid line by line, except at
        most a truncated last line, which :func:`read_event_file` skips.
        """
        if self._events_file is None:
            self._events_file = open(self.path / EVENTS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._events_file.write(ev.to_json(event) + "\n")
        self._events_file.flush()
        if not isinstance(event, ev.Progress):
            os.fsync(self._events_file.fileno())

    def check_recordable(self) -> None:
        """Refuse to record a later measurement into this run (``duogpt speed RUN_DIR``) when it
        is still running or cannot be written; checked before measuring, so nothing is wasted.

        Raises:
            InputError: the run has no terminal event and its lock's owner is alive, or the
                directory or its ``events.jsonl`` cannot be written.
        """
        if self.status() == "running":
            lock = _read_lock(self.path / LOCK_FILE) or {}
            raise InputError(
                f"{self.path} is still running (pid {lock.get('pid')} on {lock.get('host')}): "
                "measure it once the run has ended"
            )
        try:
            _probe_writable(self.path)
        except OSError as exc:
            raise InputError(
                f"cannot record the measurement in {self.path}: the run directory is not "
                f"writable ({_os_reason(exc)}); make it writable, or measure "
                f"{self.path / MODEL_DIR} to measure without recording"
            ) from exc

    def record(self, event: ev.Event) -> None:
        """Append one event to a run that has ended: a measurement of its saved model made
        afterwards (``duogpt speed RUN_DIR``). The run's lock is held for the append, so a run
        that is still going, or being resumed, is never written by two processes.

        Raises:
            InputError: as :meth:`check_recordable`, or another process holds the lock.
        """
        self.check_recordable()
        self._acquire_lock()
        try:
            self.append(event)
        except OSError as exc:
            raise InputError(
                f"cannot record the measurement in {self.path / EVENTS_FILE}: {_os_reason(exc)}"
            ) from exc
        finally:
            self.release()

    def write_report(self, text: str, path: Path | None = None, overwrite: bool = True) -> Path:
        """Write a report atomically (temp file + rename).

        Args:
            text: the Markdown.
            path: where to write; None means the run's ``report.md``.
            overwrite: replace an existing file at ``path``.

        Returns:
            The path written.

        Raises:
            InputError: the file exists and ``overwrite`` is False, or it cannot be written.
        """
        target = Path(path) if path is not None else self.path / REPORT_FILE
        if target.exists() and not overwrite:
            raise InputError(f"{target} already exists: pass --overwrite to replace it")
        try:
            _atomic_write(target, text)
        except OSError as exc:
            raise InputError(f"cannot write the report to {target}: {_os_reason(exc)}") from exc
        return target

    def release(self) -> None:
        """Close the events file and drop the lock if this object holds it (idempotent)."""
        if self._events_file is not None:
            with contextlib.suppress(OSError):
                self._events_file.close()
            self._events_file = None
        if self._owns_lock:
            lock = _read_lock(self.path / LOCK_FILE)
            if lock is not None and lock.get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    (self.path / LOCK_FILE).unlink()
            self._owns_lock = False

    # ----------------------------------------------------------------- reading

    def events(self) -> list[ev.Event]:
        """The run's events (corrupt lines are skipped: see :meth:`read`)."""
        return self.read().events

    def read(self) -> EventFile:
        """Read ``events.jsonl``; what was wrong with it is added to :attr:`notes` (once).

        Raises:
            InputError: the file exists and cannot be read.
        """
        found = read_event_file(self.path / EVENTS_FILE)
        self.notes.extend(w for w in found.warnings if w not in self.notes)
        return found

    def view(self, config: RunConfig | None = None) -> RunView:
        """The run as a :class:`RunView` of its events, with the warnings of reading them.

        Args:
            config: the run's configuration when the caller has it; else it is read
                (:meth:`config`), and a run without a readable one gets none.

        Raises:
            InputError: ``events.jsonl`` exists and cannot be read.
        """
        if config is None:
            with contextlib.suppress(InputError):
                config = self.config()
        found = self.read()
        return RunView.of(found.events, config.to_dict() if config else None, found.warnings)

    def config(self) -> RunConfig:
        """The run's configuration (from ``config.json``, else from the run-started event).

        Raises:
            InputError: neither is readable.
        """
        try:
            data = json.loads((self.path / CONFIG_FILE).read_text(encoding="utf-8"))
            return RunConfig.from_dict(data)
        except (OSError, ValueError, TypeError):
            pass
        for event in self.events():
            if isinstance(event, ev.RunStarted) and event.config:
                return RunConfig.from_dict(event.config)
        raise InputError(f"{self.path} has no readable {CONFIG_FILE}")

    def status(self, view: RunView | None = None) -> str:
        """How the run ended, or that it has not.

        Args:
            view: the run's view when the caller has it (else the events are read).

        Returns:
            ``finished``, ``cancelled`` or ``failed`` (its terminal event); ``running`` (no
            terminal event and the lock's owner is alive); ``interrupted`` (neither).
        """
        terminal = (view if view is not None else RunView.of(self.events())).terminal
        if terminal is not None:
            return terminal.kind
        return "running" if self.lock_owner_alive() else "interrupted"

    def lock_owner_alive(self) -> bool:
        """True when ``run.lock`` names a live process (always True for another host's lock)."""
        lock = _read_lock(self.path / LOCK_FILE)
        return lock is not None and _lock_is_live(lock)

    @property
    def model_dir(self) -> Path:
        """Where the pruned model is saved."""
        return self.path / MODEL_DIR

    @property
    def report_path(self) -> Path:
        """The run's own report file."""
        return self.path / REPORT_FILE

    # ----------------------------------------------------------------- internals

    def _acquire_lock(self) -> None:
        """Take ``run.lock``; take over a stale one with a note; refuse a live one."""
        lock_path = self.path / LOCK_FILE
        for _ in range(3):
            if _try_create_lock(lock_path):
                self._owns_lock = True
                return
            lock = _read_lock(lock_path)
            if lock is not None and _lock_is_live(lock):
                raise InputError(
                    f"{self.path} is in use by another run (pid {lock.get('pid')} on "
                    f"{lock.get('host')}, started {lock.get('started')}): wait for it to end "
                    "or choose another --out"
                )
            owner = "an unreadable lock" if lock is None else f"pid {lock.get('pid')}"
            self.notes.append(
                f"took over a stale lock in {self.path} ({owner} is no longer running)"
            )
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
        raise InputError(f"could not lock {lock_path}: another process keeps taking it")

    def _keep_events_until(self, block: int) -> None:
        """Cut ``events.jsonl`` after the last block-finished event of a block <= ``block``.

        Corrupt lines are passed over (and kept, so that reading the run still warns of them).

        Raises:
            InputError: the events do not show that block finished, or no run started.
        """
        events_path = self.path / EVENTS_FILE
        lines = events_path.read_text(encoding="utf-8", errors="replace").split("\n")
        keep, started = None, False
        for number, line in enumerate(lines):
            data = json_object(line)
            if data is None:
                continue  # a blank, corrupt or torn line
            kind = data.get("kind")
            started = started or kind == ev.RunStarted.kind
            if kind == ev.BlockFinished.kind and _block_of(data) <= block:
                keep = number
        self.read()  # the warnings of a damaged file go to the notes
        if keep is None or not started:
            raise InputError(
                f"the checkpoint in {self.path} is after block {block}, but events.jsonl does not "
                "show that block finished: the run directory is inconsistent; start a new run"
            )
        _atomic_write(events_path, "\n".join(lines[: keep + 1]) + "\n")

    def _remove_previous_run(self) -> None:
        """Delete the previous run's own files (never anything else in the folder)."""
        for name in RUN_FILES:
            if name != LOCK_FILE:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
        for name in RUN_DIRS:
            folder = self.path / name
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
            elif folder.is_symlink():
                folder.unlink()


# --------------------------------------------------------------------- module functions


def list_runs(root: Path = RUNS_ROOT) -> list[RunSummary]:
    """Every run directory directly under ``root``, newest first (never raises on a broken run).

    Args:
        root: the runs folder; a missing folder has no runs.

    Returns:
        One summary per run directory; folders that are not runs are skipped.
    """
    root = Path(root)
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and _holds_run(p)]
    except OSError:
        return []
    rows = [(_started_at(p), p.name, _summary_row(p)) for p in folders]
    rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return [row[2] for row in rows]


# --------------------------------------------------------------------- helpers: reading


def _block_of(data: dict[str, Any]) -> int:
    """The ``block`` of an event's JSON object (-1 when it has no usable one)."""
    try:
        return int(data.get("block", -1))
    except (TypeError, ValueError):
        return -1


def _summary_row(path: Path) -> RunSummary:
    """The runs-list row of one run directory; broken runs read as ``unreadable``."""
    started = _started_text(path)
    try:
        run_dir = RunDir(path)
        config = run_dir.config()
        view = run_dir.view(config)
        status = run_dir.status(view)
    except (InputError, OSError, ValueError, TypeError):
        return RunSummary(
            path, path.name, "unreadable", "", "", "", None, None, None, None, started, None
        )
    return RunSummary(
        path=path,
        run_id=path.name,
        status=status,
        model=view.model or config.model,
        method=view.method or config.method,
        pattern=view.pattern or config.pattern,
        weight_sparsity=view.weight_sparsity,
        act_sparsity=view.act_sparsity,
        ppl_dense=view.ppl_dense,
        ppl=view.ppl,
        started=started,
        seconds=view.seconds,
        warnings=tuple(view.warnings),
    )


def _started_at(path: Path) -> float:
    """When the run was created: the modification time of its config (or events) file."""
    for name in (CONFIG_FILE, EVENTS_FILE):
        with contextlib.suppress(OSError):
            return (path / name).stat().st_mtime
    return 0.0


def _started_text(path: Path) -> str:
    """:func:`_started_at` as local time text."""
    stamp = _started_at(path)
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else ""


# --------------------------------------------------------------------- helpers: files and locks


def _holds_run(path: Path) -> bool:
    """True when the folder holds a run's config or events."""
    return (path / CONFIG_FILE).is_file() or (path / EVENTS_FILE).is_file()


def _check_out_dir(path: Path, overwrite: bool) -> bool:
    """Refuse an ``--out`` that must not be used; return whether it holds a previous run."""
    if not path.exists():
        if path.is_symlink():
            raise InputError(f"--out {path} is a broken symbolic link: choose another --out")
        return False
    if not path.is_dir():
        raise InputError(f"--out {path} exists and is not a folder: choose another --out")
    if _holds_run(path):
        if not overwrite:
            status = _safe_status(path)
            raise InputError(
                f"--out {path} already holds another run ({status}): pass --overwrite to "
                "replace it or choose another --out"
            )
        return True
    if any(path.iterdir()):
        raise InputError(
            f"--out {path} is a non-empty folder that is not a run: choose a new or empty folder"
        )
    return False


def _checkpoint_block(path: Path) -> int:
    """The last complete block of the run's checkpoint.

    Raises:
        InputError: there is no checkpoint, or it is unreadable.
    """
    state = path / CHECKPOINTS_DIR / CHECKPOINT_STATE
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
        return int(data["block"])
    except FileNotFoundError:
        raise InputError(
            f"no checkpoint in {path}: the run stopped before its first block was complete, or "
            "ran with --no-checkpoints; start a new run"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"the checkpoint in {path} is unreadable ({type(exc).__name__}); start a new run"
        ) from exc


def _safe_status(path: Path) -> str:
    """A run's status for a message (never raises)."""
    try:
        return RunDir(path).status()
    except (InputError, OSError, ValueError):
        return "unreadable"


def _new_default_dir(root: Path, config: RunConfig) -> tuple[Path, bool]:
    """Create ``root/<YYYYmmdd-HHMMSS>-<method>-<model-slug>`` (suffix -2, -3... when taken)."""
    stem = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{config.method}-{model_slug(config.model)}"
    _make_dir(root)
    for attempt in range(1, 1000):
        path = root / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot create {path}: {_os_reason(exc)}") from exc
        return path, True
    raise InputError(f"too many runs named {stem} in {root}: choose an --out")


def model_slug(model: str) -> str:
    """A short folder-safe name for a model spec (``org/SmolLM2-135M`` -> ``smollm2-135m``).

    Args:
        model: a built-in name, a path, or a hub id.

    Returns:
        Lower-case letters, digits, dots and dashes; at most 40 characters; never empty.
    """
    name = str(model).rstrip("/\\")
    name = re.split(r"[/\\]", name)[-1]
    name = re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")
    return slug[:40].strip("-.") or "model"


def _make_dir(path: Path) -> None:
    """mkdir -p, as an :class:`InputError` when it cannot be done."""
    with _refused(lambda reason: f"cannot create the run directory {path}: {reason}"):
        path.mkdir(parents=True, exist_ok=True)


def _check_writable(path: Path) -> None:
    """Refuse a folder we cannot write into (tries a real file: root ignores permission bits)."""
    with (
        _refused(lambda reason: f"the run directory {path} is not writable ({reason})"),
        tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"),
    ):
        pass


def _probe_writable(path: Path) -> None:
    """Create a file in a run directory and open its ``events.jsonl`` for appending, writing
    nothing (a real try: root ignores permission bits).

    Raises:
        OSError: either cannot be done.
    """
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
        pass
    if (path / EVENTS_FILE).exists():
        with open(path / EVENTS_FILE, "a", encoding="utf-8"):
            pass


@contextlib.contextmanager
def _refused(problem: Callable[[str], str]) -> Iterator[None]:
    """Turn an :class:`OSError` into the one-line :class:`InputError` ``problem(reason)``,
    followed by the fix (another ``--out``)."""
    try:
        yield
    except OSError as exc:
        raise InputError(f"{problem(_os_reason(exc))}: choose another --out") from exc


def _check_free_space(path: Path) -> None:
    """Refuse a disk with less than :data:`MIN_FREE_BYTES` free."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise InputError(
            f"only {free / 2**20:.0f} MB free on the disk of {path} (a run needs at least "
            f"{MIN_FREE_BYTES / 2**20:.0f} MB): free some space or choose another --out"
        )


def _remove_empty_tree(path: Path) -> None:
    """Remove a folder we just created, if it is still empty."""
    with contextlib.suppress(OSError):
        path.rmdir()


def _atomic_write(path: Path, text: str) -> None:
    """Write text to a temp file next to ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _lock_payload() -> dict[str, Any]:
    """What ``run.lock`` records about its owner."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def _try_create_lock(lock_path: Path) -> bool:
    """Create the lock file with our payload, atomically and exclusively (False if it exists)."""
    handle, temp = tempfile.mkstemp(dir=lock_path.parent, prefix=".run.lock.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(_lock_payload(), stream)
        os.link(temp, lock_path)  # fails if the lock exists: exclusive and never half-written
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _read_lock(lock_path: Path) -> dict[str, Any] | None:
    """The lock's payload, or None when there is no lock or it is unreadable."""
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lock_is_live(lock: dict[str, Any]) -> bool:
    """True when the lock's owner may still be running (another host's lock counts as live)."""
    if lock.get("host") != socket.gethostname():
        return True
    pid = lock.get("pid")
    return isinstance(pid, int) and pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this machine (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:  # gone (psutil.ZombieProcess is one too)
        return False
    except psutil.AccessDenied:  # another user's process: it exists
        return True


def _os_reason(exc: OSError) -> str:
    """The short reason of an OS error (``Permission denied``), without errno noise."""
    return exc.strerror or str(exc)
