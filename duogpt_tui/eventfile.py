"""Reading an ``events.jsonl`` file that may be damaged: whatever can be read is read.

One event per line (the run store appends them, ``duogpt_tui.runstore``). A killed writer leaves
at most a truncated last line, skipped silently; any other line that is not a JSON event of the
right shape (bad JSON, another JSON value, a field of the wrong type) is skipped and counted, and
the count becomes a warning in the run's view, so one bad line never makes a whole run unreadable.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solver import events as ev
from solver.errors import InputError


@dataclass(frozen=True)
class EventFile:
    """What :func:`read_event_file` found in an ``events.jsonl`` file.

    Attributes:
        path: the file.
        events: the events in order.
        corrupt_lines: the numbers (from 1) of the lines that were skipped because they are
            not JSON or not a valid event.
    """

    path: Path
    events: list[ev.Event]
    corrupt_lines: tuple[int, ...] = ()

    @property
    def warnings(self) -> list[str]:
        """One line on the corrupt lines skipped (none for a sound file)."""
        if not self.corrupt_lines:
            return []
        count = len(self.corrupt_lines)
        shown = ", ".join(str(n) for n in self.corrupt_lines[:5])
        more = ", ..." if count > 5 else ""
        lines = "line" if count == 1 else "lines"
        return [
            f"{self.path.name}: skipped {count} corrupt {lines} ({lines} {shown}{more}); the "
            "figures leave out what they held"
        ]


def read_event_file(path: Path) -> EventFile:
    """Read an ``events.jsonl`` file, skipping what cannot be read.

    Blank lines, a truncated (unparsable) last line — the last write of a killed process — and
    events of unknown kinds (from a newer version) are skipped silently. Any other line that is
    not a JSON event is skipped and counted in :attr:`EventFile.corrupt_lines`.

    Args:
        path: the file.

    Returns:
        The events and the corrupt lines; no events when the file does not exist.

    Raises:
        InputError: the file exists and cannot be read.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return EventFile(path, [])
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = text.split("\n")
    out: list[ev.Event] = []
    corrupt: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        data = json_object(line)
        if data is None:
            if number == len(lines):
                break  # the truncated last line of a killed writer (no newline after it)
            corrupt.append(number)
            continue
        if data.get("kind") not in ev.EVENT_TYPES:
            continue
        try:
            event = ev.from_dict(data)
        except (TypeError, ValueError):
            corrupt.append(number)
            continue
        if _well_typed(event):
            out.append(event)
        else:
            corrupt.append(number)
    return EventFile(path, out, tuple(corrupt))


def read_events(path: Path) -> list[ev.Event]:
    """The events of an ``events.jsonl`` file (see :func:`read_event_file`; corrupt lines are
    skipped)."""
    return read_event_file(path).events


def json_object(line: str) -> dict[str, Any] | None:
    """The JSON object on one line, or None for a blank line, bad JSON or another JSON value."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _well_typed(event: ev.Event) -> bool:
    """True when every field holds a value of its declared kind (a number where a number is
    expected...), so that nothing downstream trips over a line that was valid JSON only."""
    for name, expected in _field_kinds(event.kind):
        value = getattr(event, name)
        if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
            return False
    return True


@functools.cache
def _field_kinds(kind: str) -> tuple[tuple[str, tuple[type, ...]], ...]:
    """``(field name, accepted types)`` of an event kind's class, from its defaults (an int is
    a float too; a bool is only a bool)."""
    kinds = []
    for spec in dataclasses.fields(ev.EVENT_TYPES[kind]):
        factory = spec.default_factory
        default = factory() if factory is not dataclasses.MISSING else spec.default
        expected = (int, float) if isinstance(default, float) else (type(default),)
        kinds.append((spec.name, expected))
    return tuple(kinds)
