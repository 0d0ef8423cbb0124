"""A corrupt line in events.jsonl costs only itself: ``duogpt runs`` and ``duogpt report`` still
read the run, skip the line and warn about it on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.cli.test_cli import FAST


def damage(run: Path, where: str) -> None:
    """Put a garbage line at the end of the run's events.jsonl, or in its middle."""
    events = run / "events.jsonl"
    lines = events.read_text().splitlines(keepends=True)
    lines.insert(len(lines) if where == "appended" else 5, "\x00garbage{{\n")
    events.write_text("".join(lines))


@pytest.mark.parametrize("where", ["appended", "middle"])
def test_runs_and_report_survive_a_corrupt_line(cli: Cli, where: str) -> None:
    assert cli("prune", *FAST, "--out", "runs/a").exit_code == 0
    run = cli.root / "runs" / "a"
    original = (run / "report.md").read_text()
    damage(run, where)

    listed = cli("runs", "--json")
    assert listed.exit_code == 0, listed.stderr
    [row] = json.loads(listed.stdout)["runs"]
    assert (row["status"], row["ppl"]) == ("finished", 1850.75)
    [warning] = row["warnings"]
    assert "skipped 1 corrupt line" in warning
    assert f"warning: {run.relative_to(cli.root)}: events.jsonl: skipped 1" in listed.stderr
    table = cli("runs")
    assert table.exit_code == 0 and "finished" in table.stdout.splitlines()[1]

    result = cli("report", "runs/a")
    assert result.exit_code == 0, result.stderr
    assert "warning: events.jsonl: skipped 1 corrupt line" in result.stderr
    text = (run / "report.md").read_text()
    added = [line for line in text.splitlines() if line not in original.splitlines()]
    assert len(added) == 1 and added[0].startswith("- **warning**: events.jsonl: skipped 1")
