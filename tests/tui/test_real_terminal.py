"""Issue 15: the real ``duogpt-tui`` in a real pseudo-terminal of 80x24, pruning ``tiny-random``.

``test_real_run.py`` drives the App through Textual's headless pilot. Here the program itself
runs as a user starts it: its console script, in a child process whose standard streams are the
slave side of a pseudo-terminal (``os.openpty``) sized 24 rows x 80 columns with
``TIOCSWINSZ``, and ``TERM=xterm-256color``. A thread reads everything the program writes (so it
never blocks on a full pty buffer) into :class:`VirtualTerminal`, a minimal terminal that keeps
the screen's text and records every cell drawn outside the 80x24 screen. Keys are bytes written
to the master side: ``ctrl+r`` (``\\x12``) starts the run on the setup screen and ``ctrl+q``
(``\\x11``) quits. POSIX only (no pseudo-terminals elsewhere).
"""

from __future__ import annotations

import codecs
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.cells import cell_len

from duogpt_tui.runstore import EVENTS_FILE, LOCK_FILE, REPORT_FILE
from solver.events import TERMINAL_KINDS

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs a POSIX pseudo-terminal")

COLUMNS, ROWS = 80, 24
"""The smallest terminal the workbench supports."""

CTRL_R = b"\x12"
"""``ctrl+r``: Start, on the setup screen."""

CTRL_Q = b"\x11"
"""``ctrl+q``: Quit (the App's priority binding)."""

RUN_OPTIONS = [
    "--model",
    "tiny-random",
    "--calib",
    "sotu",
    "--eval",
    "moby-dick",
    "--nsamples",
    "4",
    "--seqlen",
    "32",
    "--eval-windows",
    "2",
    "--device",
    "cpu",
    "--no-save-model",
]
"""The run the setup form is prefilled with (as ``test_tiny_random_run_at_80x24``'s)."""


class VirtualTerminal:
    """Just enough of a terminal to read what a full-screen Textual app draws.

    It follows the cursor through printable text and the CSI moves Textual uses (``H``/``f``,
    ``A``-``G``, ``d``), clears with ``J``/``K``, skips every other escape sequence (styles,
    modes, OSC/DCS strings) and keeps the text of each cell. Every character drawn beyond the
    last column or row, and every cursor move there, is recorded in :attr:`outside`.
    """

    def __init__(self, columns: int, rows: int) -> None:
        """An empty screen of ``columns`` x ``rows`` with the cursor at the top left."""
        self.columns = columns
        self.rows = rows
        self.cells = [[" "] * columns for _ in range(rows)]
        self.row = 0
        self.col = 0
        self.outside: list[str] = []
        self.widest = 0
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    # ----------------------------------------------------------------------------- reading

    def text(self) -> str:
        """The screen's text, one line per row."""
        return "\n".join("".join(row).rstrip() for row in self.cells)

    # ----------------------------------------------------------------------------- writing

    def feed(self, data: bytes) -> None:
        """Interpret the next bytes of output (an escape sequence may be cut between calls)."""
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        index = 0
        while index < len(text):
            char = text[index]
            if char == "\x1b":
                end = escape_end(text, index)
                if end is None:
                    self._pending = text[index:]
                    return
                self._escape(text[index:end])
                index = end
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._move(self.row + 1, self.col)
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char >= " " and char != "\x7f":
                self._put(char)
            index += 1

    def _put(self, char: str) -> None:
        """Draw one character at the cursor and advance it."""
        width = cell_len(char)
        if width == 0:
            return
        if self.row >= self.rows or self.col + width > self.columns:
            self._outside(f"{char!r} drawn at row {self.row + 1}, column {self.col + 1}")
        else:
            self.cells[self.row][self.col] = char
            for extra in range(1, width):
                self.cells[self.row][self.col + extra] = ""
        self.col += width
        self.widest = max(self.widest, self.col)

    def _move(self, row: int, col: int) -> None:
        """Put the cursor at (0-based) ``row``, ``col``; a place off the screen is recorded."""
        if row >= self.rows or col >= self.columns:
            self._outside(f"cursor moved to row {row + 1}, column {col + 1}")
        self.row, self.col = max(0, row), max(0, col)

    def _outside(self, what: str) -> None:
        """Record a write beyond the screen (the first 20 of them)."""
        if len(self.outside) < 20:
            self.outside.append(what)

    def _escape(self, sequence: str) -> None:
        """Apply the cursor moves and clears among escape sequences; ignore the others."""
        if not sequence.startswith("\x1b[") or len(sequence) < 3:
            return
        final, body = sequence[-1], sequence[2:-1]
        if body[:1] in ("?", ">", "<", "=") or any(" " <= c <= "/" for c in body):
            return  # private modes, queries and sequences with intermediates move nothing
        numbers = [int(part) if part.isdigit() else 0 for part in body.split(";")]
        first = numbers[0] or 1
        if final in "Hf":
            column = numbers[1] if len(numbers) > 1 and numbers[1] else 1
            self._move(first - 1, column - 1)
        elif final == "A":
            self._move(max(0, self.row - first), self.col)
        elif final == "B":
            self._move(self.row + first, self.col)
        elif final == "C":
            self._move(self.row, self.col + first)
        elif final == "D":
            self._move(self.row, max(0, self.col - first))
        elif final == "G":
            self._move(self.row, first - 1)
        elif final == "d":
            self._move(first - 1, self.col)
        elif final == "J" and numbers[0] in (2, 3):
            self.cells = [[" "] * self.columns for _ in range(self.rows)]
        elif final == "K" and self.row < self.rows:
            start = 0 if numbers[0] in (1, 2) else self.col
            stop = self.col + 1 if numbers[0] == 1 else self.columns
            for col in range(start, min(stop, self.columns)):
                self.cells[self.row][col] = " "


def escape_end(text: str, start: int) -> int | None:
    """Where the escape sequence at ``text[start]`` ends (exclusive); None if it is cut off."""
    if start + 1 >= len(text):
        return None
    kind = text[start + 1]
    if kind == "[":  # CSI: parameters and intermediates, then one final byte
        for index in range(start + 2, len(text)):
            if "@" <= text[index] <= "~":
                return index + 1
        return None
    if kind in "]P_^X":  # OSC, DCS, APC, PM, SOS: a string up to BEL or ST
        for index in range(start + 2, len(text)):
            if text[index] == "\x07" and kind == "]":
                return index + 1
            if text[index] == "\x1b":
                return index + 2 if index + 1 < len(text) else None
        return None
    if kind in "()*+#%":  # character sets and the like: one more character
        return start + 3 if start + 2 < len(text) else None
    return start + 2


class PtyProgram:
    """A program whose standard streams are a pseudo-terminal of ``rows`` x ``columns``.

    A daemon thread feeds everything it writes to :attr:`terminal` (and keeps the raw bytes)
    until the slave side is closed by all its holders.
    """

    def __init__(self, argv: list[str], cwd: Path, columns: int, rows: int) -> None:
        """Start ``argv`` in ``cwd`` on a fresh pseudo-terminal, in its own session."""
        import fcntl
        import termios

        self.terminal = VirtualTerminal(columns, rows)
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.master, slave = os.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")}
            for name in ("COLUMNS", "LINES"):  # these would override the terminal's own size
                env.pop(name, None)
            env["TERM"] = "xterm-256color"
            env.setdefault("OMP_NUM_THREADS", "1")
            self.process = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)
        self.reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        """Read the master side until the program and its children closed the terminal."""
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: no process holds the slave side any more
                return
            if not data:
                return
            with self.lock:
                self.raw += data
                self.terminal.feed(data)

    def screen(self) -> str:
        """The screen's text now."""
        with self.lock:
            return self.terminal.text()

    def press(self, key: bytes) -> None:
        """Type ``key`` (the bytes a terminal sends for it)."""
        os.write(self.master, key)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        """Poll ``condition`` until it holds.

        Raises:
            AssertionError: it did not within ``timeout`` seconds, or the program exited first
                (with the screen as it was).
        """
        deadline = time.monotonic() + timeout
        while not condition():
            code = self.process.poll()
            if code is not None:
                raise AssertionError(f"exited ({code}) waiting for {what}:\n{self.screen()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out ({timeout}s) waiting for {what}:\n{self.screen()}")
            time.sleep(0.1)

    def close(self) -> None:
        """Kill the program's session if it still runs, then stop reading."""
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.reader.join(timeout=5)
        os.close(self.master)


def program() -> list[str]:
    """The console script of this environment (``python -m duogpt_tui.app`` without one)."""
    script = Path(sys.executable).with_name("duogpt-tui")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "duogpt_tui.app"]


def run_events(run: Path) -> list[dict[str, object]]:
    """The events recorded in ``run`` so far (the last line may be half written: skipped)."""
    events: list[dict[str, object]] = []
    try:
        lines = (run / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return events
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def ended_run(runs: Path) -> Path | None:
    """The run in ``runs`` that has ended and is complete (terminal event, report, no lock)."""
    for run in sorted(runs.iterdir()) if runs.is_dir() else []:
        events = run_events(run)
        if (
            events
            and events[-1].get("kind") in TERMINAL_KINDS
            and (run / REPORT_FILE).is_file()
            and not (run / LOCK_FILE).exists()
        ):
            return run
    return None


def test_tiny_random_run_in_a_real_80x24_terminal(tmp_path: Path) -> None:
    """Start, watch and quit the real program at 80x24: the run finishes with its report, the
    program exits with 0, and nothing is drawn beyond the 80th column or the 24th row."""
    runs = tmp_path / "runs"
    argv = [*program(), *RUN_OPTIONS, "--runs-dir", str(runs)]
    app = PtyProgram(argv, tmp_path, COLUMNS, ROWS)
    try:
        app.wait_for("the setup screen", lambda: "Start" in app.screen(), timeout=60)
        app.wait_for("the estimate", lambda: "pre-flight: about" in app.screen(), timeout=60)
        app.press(CTRL_R)
        found: list[Path] = []

        def run_ended() -> bool:
            run = ended_run(runs)
            if run is not None:
                found.append(run)
            return run is not None

        app.wait_for("the run to end", run_ended, timeout=120)
        run = found[0]
        events = run_events(run)
        assert events[-1]["kind"] == "finished", events[-1]
        assert sum(1 for event in events if event["kind"] == "finished") == 1
        assert (run / REPORT_FILE).read_text(encoding="utf-8").startswith("#")
        # the run screen shows the ending; then nothing is in progress and ctrl+q quits at once
        app.wait_for("'finished' on the run screen", lambda: "finished" in app.screen(), 20)
        screen = app.screen()
        assert "DuoGPT workbench" in screen, screen
        time.sleep(0.5)
        app.press(CTRL_Q)
        code = app.process.wait(timeout=20)
        app.reader.join(timeout=5)
        assert code == 0, app.screen()
        assert [path.name for path in runs.iterdir()] == [run.name]
        with app.lock:
            outside = list(app.terminal.outside)
            widest = app.terminal.widest
            raw = bytes(app.raw)
        assert not outside, outside
        # the App took the terminal's size: it drew up to the 80th column and on the 24th row
        assert widest == COLUMNS
        assert screen.splitlines()[ROWS - 1].strip(), screen
        # the program left the alternate screen it drew on
        assert raw.rfind(b"\x1b[?1049l") > raw.rfind(b"\x1b[?1049h") >= 0
    finally:
        app.close()
        (tmp_path / "terminal.log").write_bytes(bytes(app.raw))  # to read after a failure


def test_virtual_terminal_records_what_is_drawn_outside_the_screen() -> None:
    """The check above is not vacuous: text past the last column or row, or a cursor moved
    there, is recorded; text up to the edges is kept, escape sequences cut between reads too."""
    terminal = VirtualTerminal(COLUMNS, ROWS)
    terminal.feed(b"\x1b[?1049h\x1b[1;78H\x1b[1;38;2;0;0;0mab\x1b")
    terminal.feed(b"[0mc\x1b]0;title\x07\x1b[24;1Hz\xe2\x94")
    terminal.feed(b"\x80")
    assert terminal.outside == []
    lines = terminal.text().splitlines()
    assert lines[0].endswith("abc") and len(lines[0]) == COLUMNS
    assert lines[ROWS - 1] == "z\u2500" and terminal.widest == COLUMNS
    terminal.feed(b"\x1b[2;80Hxy\x1b[25;1H")
    assert terminal.outside == [
        "'y' drawn at row 2, column 81",
        "cursor moved to row 25, column 1",
    ]
