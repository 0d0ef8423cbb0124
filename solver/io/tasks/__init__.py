"""The built-in zero-shot tasks: lm-evaluation-harness task configurations plus their data.

Each task is a YAML file here (read by lm-eval's ``TaskManager``) and an xz-compressed JSON-lines
file of examples, built deterministically by :mod:`solver.io.tasks.build` from public-domain
text that calibration does not use (README.md beside this file says how). They work offline.
This module only describes them; :mod:`solver.run.tasks` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
"""Where the task configurations and their data are."""


@dataclass(frozen=True)
class BuiltinTask:
    """One built-in task.

    Attributes:
        name: the lm-eval task name.
        summary: what it asks, in a few words.
        chance: the accuracy of guessing at random, as a fraction.
        limit: the examples evaluated by default (the first of the file's).
        examples: the examples the file holds.
    """

    name: str
    summary: str
    chance: float
    limit: int
    examples: int


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    task.name: task
    for task in (
        BuiltinTask(
            "last_word",
            "LAMBADA-style last-word prediction, Moby-Dick passages (open vocabulary)",
            0.0,
            100,
            255,
        ),
        BuiltinTask(
            "next_sentence",
            "4-way next-sentence choice, Moby-Dick and The Devil's Dictionary",
            0.25,
            60,
            480,
        ),
        BuiltinTask(
            "spam_ham",
            "is this email spam? SpamAssassin public corpus, half spam",
            0.5,
            60,
            500,
        ),
    )
}
"""The built-in tasks by name (:func:`solver.run.tasks.list_lines` prints them)."""
