"""The run directory: create/refuse/overwrite, the lock, events on disk, status, the runs list."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from duogpt_tui import runstore
from duogpt_tui.eventfile import read_event_file
from duogpt_tui.runstore import RunDir, list_runs, read_events
from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError
from tests.report import scripted

CONFIG = scripted.CONFIG


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def finished_dir(path: Path) -> RunDir:
    """A finished run written into ``path`` (lock released)."""
    run_dir = RunDir.create(CONFIG, out=path)
    for event in scripted.finished_run():
        run_dir.append(event)
    run_dir.release()
    return run_dir


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_create_default_dir_name_and_config(tmp_path: Path) -> None:
    run_dir = RunDir.create(CONFIG, runs_root=tmp_path / "runs")
    try:
        assert run_dir.path.parent == tmp_path / "runs"
        assert run_dir.path.name.endswith("-duogpt-tiny-random")
        assert RunConfig.from_dict(json.loads((run_dir.path / "config.json").read_text())) == CONFIG
        assert run_dir.config() == CONFIG
        assert (run_dir.path / "run.lock").is_file()
        lock = json.loads((run_dir.path / "run.lock").read_text())
        assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
        assert "started" in lock
        assert not list(run_dir.path.glob(".*.tmp")), "no temp files left"
        assert run_dir.status() == "running"
    finally:
        run_dir.release()
    assert not (run_dir.path / "run.lock").exists()
    assert run_dir.status() == "interrupted"


def test_default_names_are_unique(tmp_path: Path) -> None:
    first = RunDir.create(CONFIG, runs_root=tmp_path)
    second = RunDir.create(CONFIG, runs_root=tmp_path)
    first.release()
    second.release()
    assert first.path != second.path


def test_model_slug() -> None:
    assert runstore.model_slug("HuggingFaceTB/SmolLM2-135M") == "smollm2-135m"
    assert runstore.model_slug("/models/My Model.Q4.gguf") == "my-model.q4"
    assert runstore.model_slug("///") == "model"


def test_refuses_another_run_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    finished_dir(out)
    before = snapshot(out)
    with pytest.raises(InputError, match=r"already holds another run \(finished\).*--overwrite"):
        RunDir.create(CONFIG.replace(method="wanda"), out=out)
    assert snapshot(out) == before


def test_overwrite_removes_only_the_runs_own_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    finished_dir(out)
    (out / "model").mkdir()
    (out / "model" / "weights.bin").write_bytes(b"x")
    (out / "report.md").write_text("old report")
    (out / "my-notes.txt").write_text("keep me")
    run_dir = RunDir.create(CONFIG.replace(method="wanda"), out=out, overwrite=True)
    run_dir.release()
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert not (out / "model").exists() and not (out / "report.md").exists()
    assert run_dir.config().method == "wanda"
    assert run_dir.events() == []


def test_refuses_a_non_empty_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="non-empty folder that is not a run"):
            RunDir.create(CONFIG, out=tmp_path, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_accepts_an_empty_existing_folder(tmp_path: Path) -> None:
    RunDir.create(CONFIG, out=tmp_path).release()
    assert (tmp_path / "config.json").is_file()


def test_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        RunDir.create(CONFIG, out=tmp_path / "f")


def test_refuses_an_unwritable_place(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="cannot create the run directory"):
        RunDir.create(CONFIG, out=tmp_path / "f" / "run")
    with pytest.raises(InputError, match=r"cannot create|not writable"):
        RunDir.create(CONFIG, out=Path("/proc/duogpt-cannot-write-here"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_refuses_a_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            RunDir.create(CONFIG, out=folder)
    finally:
        folder.chmod(0o700)


def test_refuses_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = type("Usage", (), {"total": 10**9, "used": 10**9, "free": 5 * 2**20})
    monkeypatch.setattr("duogpt_tui.runstore.shutil.disk_usage", lambda path: usage)
    with pytest.raises(InputError, match="only 5 MB free"):
        RunDir.create(CONFIG, out=tmp_path / "run")
    assert not (tmp_path / "run").exists(), "the folder it made is removed again"


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    first = RunDir.create(CONFIG, out=tmp_path / "run")
    try:
        with pytest.raises(InputError, match=r"in use by another run \(pid"):
            RunDir.create(CONFIG, out=tmp_path / "run", overwrite=True)
        assert first.config() == CONFIG
    finally:
        first.release()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path: Path) -> None:
    out = tmp_path / "run"
    finished_dir(out)
    lock = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (out / "run.lock").write_text(json.dumps(lock))
    run_dir = RunDir.create(CONFIG, out=out, overwrite=True)
    try:
        assert any("stale lock" in note for note in run_dir.notes)
        assert json.loads((out / "run.lock").read_text())["pid"] == os.getpid()
    finally:
        run_dir.release()


def test_another_hosts_lock_counts_as_live(tmp_path: Path) -> None:
    out = tmp_path / "run"
    finished_dir(out)
    lock = {"pid": dead_pid(), "host": "some-other-host", "started": "2020-01-01T00:00:00"}
    (out / "run.lock").write_text(json.dumps(lock))
    with pytest.raises(InputError, match="in use"):
        RunDir.create(CONFIG, out=out, overwrite=True)


def test_release_is_idempotent_and_keeps_a_foreign_lock(tmp_path: Path) -> None:
    run_dir = RunDir.create(CONFIG, out=tmp_path / "run")
    run_dir.release()
    run_dir.release()
    foreign = {"pid": 1, "host": socket.gethostname(), "started": "x"}
    (run_dir.path / "run.lock").write_text(json.dumps(foreign))
    run_dir.release()
    assert (run_dir.path / "run.lock").is_file()


def test_events_round_trip_through_the_file(tmp_path: Path) -> None:
    run_dir = finished_dir(tmp_path / "run")
    assert run_dir.events() == scripted.finished_run()
    assert run_dir.status() == "finished"
    lines = (run_dir.path / "events.jsonl").read_text().splitlines()
    assert len(lines) == len(scripted.finished_run())
    assert all(json.loads(line)["kind"] for line in lines)


@pytest.mark.parametrize(
    ("events", "status"),
    [
        (scripted.cancelled_run(), "cancelled"),
        (scripted.failed_run(), "failed"),
        (scripted.finished_run()[:6], "interrupted"),
    ],
)
def test_status_from_the_terminal_event(
    tmp_path: Path, events: list[ev.Event], status: str
) -> None:
    run_dir = RunDir.create(CONFIG, out=tmp_path / "run")
    for event in events:
        run_dir.append(event)
    run_dir.release()
    assert RunDir.open(tmp_path / "run").status() == status


def test_truncated_last_line_reads_as_interrupted(tmp_path: Path) -> None:
    run_dir = RunDir.create(CONFIG, out=tmp_path / "run")
    for event in scripted.finished_run()[:6]:
        run_dir.append(event)
    run_dir.release()
    with open(run_dir.path / "events.jsonl", "a", encoding="utf-8") as stream:
        stream.write('{"kind": "layer_solved", "t": 2.1, "blo')  # killed mid-write
    assert run_dir.events() == scripted.finished_run()[:6]
    assert run_dir.status() == "interrupted"
    assert list_runs(tmp_path)[0].status == "interrupted"


def damaged_dir(path: Path, where: str) -> RunDir:
    """A finished run with a garbage line appended to events.jsonl, or put in its middle."""
    run_dir = finished_dir(path)
    events_path = run_dir.path / "events.jsonl"
    lines = events_path.read_text().splitlines(keepends=True)
    at = len(lines) if where == "appended" else 10
    lines.insert(at, "#@! this is not an event\n")
    events_path.write_text("".join(lines))
    return run_dir


@pytest.mark.parametrize("where", ["appended", "middle"])
def test_a_corrupt_line_is_skipped_and_counted(tmp_path: Path, where: str) -> None:
    """A garbage line costs only itself: the run reads back whole, with one warning."""
    run_dir = damaged_dir(tmp_path / "run", where)
    found = read_event_file(run_dir.path / "events.jsonl")
    line = len(scripted.finished_run()) + 1 if where == "appended" else 11
    assert found.corrupt_lines == (line,)
    assert found.events == scripted.finished_run()
    [warning] = found.warnings
    assert warning.startswith(f"events.jsonl: skipped 1 corrupt line (line {line})")
    view = RunDir.open(run_dir.path).view()
    assert view.warnings == [warning] and view.status == "finished" and view.ppl == 1850.75
    assert RunDir.open(run_dir.path).status() == "finished"
    opened = RunDir.open(run_dir.path)
    opened.events()
    opened.events()
    assert opened.notes == [warning], "the warning is noted once, for the TUI's log"
    [row] = list_runs(tmp_path)
    assert (row.status, row.ppl, row.warnings) == ("finished", 1850.75, (warning,))
    assert row.to_dict()["warnings"] == [warning]


def test_the_report_of_a_damaged_run_lists_what_was_skipped(tmp_path: Path) -> None:
    from duogpt_tui.report import render_markdown

    clean = render_markdown(finished_dir(tmp_path / "clean").view())
    damaged = render_markdown(damaged_dir(tmp_path / "run", "middle").view())
    assert clean == render_markdown(scripted.finished_run(), CONFIG.to_dict())
    extra = [line for line in damaged.splitlines() if line not in clean.splitlines()]
    assert extra == [
        "- **warning**: events.jsonl: skipped 1 corrupt line (line 11); the figures leave out "
        "what they held"
    ]


def test_many_corrupt_lines_and_json_that_is_not_an_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    garbage = ["not json", "[1, 2]", '"text"', '{"kind": "note", "level": 1, "nope": 2}']
    lines = ['{"kind": "note", "text": "a"}', *garbage, *(["}{"] * 4), '{"kind": "note"}']
    path.write_text("\n".join(lines) + "\n")
    found = read_event_file(path)
    assert found.events == [ev.Note(text="a"), ev.Note()]
    assert found.corrupt_lines == tuple(range(2, 10))
    assert "skipped 8 corrupt lines (lines 2, 3, 4, 5, 6, ...)" in found.warnings[0]
    assert read_events(path) == found.events


def test_resume_passes_over_a_corrupt_line(tmp_path: Path) -> None:
    run_dir = RunDir.create(CONFIG, out=tmp_path / "run")
    for event in scripted.cancelled_run():
        run_dir.append(event)
    run_dir.release()
    events_path = run_dir.path / "events.jsonl"
    lines = events_path.read_text().splitlines(keepends=True)
    events_path.write_text("".join([*lines[:3], "garbage\n", *lines[3:]]))
    state = run_dir.path / "checkpoints" / "state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"block": 0}))
    resumed = RunDir.resume(run_dir.path)
    try:
        assert resumed.resumed_block == 0
        assert any("skipped 1 corrupt line (line 4)" in note for note in resumed.notes)
        kinds = [e.kind for e in resumed.events()]
        assert kinds[-1] == "block_finished" and "cancelled" not in kinds
    finally:
        resumed.release()


def test_pid_alive() -> None:
    assert runstore.pid_alive(os.getpid())
    assert not runstore.pid_alive(dead_pid())
    assert not runstore.pid_alive(0) and not runstore.pid_alive(-5)


def test_a_zombie_counts_as_dead() -> None:
    import time

    import psutil

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while runstore.pid_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not runstore.pid_alive(proc.pid)
        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE, "exited, not reaped"
    finally:
        proc.wait()


def test_unknown_event_kinds_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "from_the_future", "t": 1}\n{"kind": "note", "text": "hi"}\n')
    assert read_events(path) == [ev.Note(text="hi")]


def test_open_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a run directory"):
        RunDir.open(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        RunDir.open(tmp_path / "missing")


def test_write_report_is_atomic_and_can_refuse(tmp_path: Path) -> None:
    run_dir = finished_dir(tmp_path / "run")
    assert run_dir.write_report("# one\n") == run_dir.path / "report.md"
    assert run_dir.write_report("# two\n") == run_dir.path / "report.md"
    assert (run_dir.path / "report.md").read_text() == "# two\n"
    with pytest.raises(InputError, match="already exists"):
        run_dir.write_report("# three\n", overwrite=False)
    assert not list(run_dir.path.glob(".report.md.*"))


def test_list_runs_newest_first_skipping_other_folders(tmp_path: Path) -> None:
    old = finished_dir(tmp_path / "old")
    new = RunDir.create(CONFIG.replace(method="wanda"), out=tmp_path / "new")
    for event in scripted.failed_run("input"):  # no run-started event: the config says wanda
        new.append(event)
    new.release()
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "file.txt").write_text("x")
    os.utime(old.path / "config.json", (1_600_000_000, 1_600_000_000))
    rows = list_runs(tmp_path)
    assert [row.run_id for row in rows] == ["new", "old"]
    newest, oldest = rows
    assert (newest.status, newest.method, newest.ppl) == ("failed", "wanda", None)
    assert (oldest.status, oldest.ppl_dense, oldest.ppl) == ("finished", 1000.0, 1850.75)
    assert oldest.weight_sparsity == 0.5 and oldest.seconds == 5.0
    assert oldest.to_dict()["path"] == str(old.path)
    assert list_runs(tmp_path / "missing") == []
