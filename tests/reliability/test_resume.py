"""A run killed with ``kill -9`` reads as interrupted, and ``duogpt prune --resume`` finishes it
with the result of an uninterrupted run; two writers are never let into one run directory.

The end-to-end test is one story on real processes: a run is stopped (SIGSTOP) right after its
first block, while it still holds its lock, so that a second writer can be refused; it is then
killed with SIGKILL, checked, and resumed in-process; an uninterrupted reference run, started
at the same time in another child, gives the perplexity the resumed run must reproduce. The
other tests check :meth:`RunDir.resume` on scripted events (no solver).
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from duogpt_tui.runstore import RunDir
from solver import events as ev
from tests.cli.conftest import Cli
from tests.reliability.conftest import FAST, Child, events_of, has_kind, kinds, one_error_line
from tests.report import scripted
from tests.report.test_runstore import dead_pid


def test_a_killed_run_resumes_to_the_uninterrupted_result(
    child: Callable[..., Child], real_cli: Cli
) -> None:
    killed = child(*FAST, out="run")
    reference = child(*FAST, out="ref")
    run = real_cli.root / "run"
    state = run / "checkpoints" / "state.json"
    killed.wait_for(lambda events: has_kind("block_finished", block=0)(events) and state.is_file())
    os.kill(killed.pid, signal.SIGSTOP)  # frozen after block 0's checkpoint, holding its lock
    try:
        assert RunDir.open(run).status() == "running"
        for args in (("prune", *FAST, "--out", "run", "--overwrite"), ("prune", "--resume", "run")):
            refused = real_cli(*args)
            assert refused.exit_code == 2
            line = one_error_line(refused.stderr)
            assert f"run is in use by another run (pid {killed.pid} on " in line
            assert line.endswith("wait for it to end or choose another --out")
    finally:
        killed.kill()
    assert killed.code == -signal.SIGKILL

    # kill -9: every line of events.jsonl is valid, the status reads as interrupted
    events = events_of(run)
    assert events[0]["kind"] == "progress" and "run_started" in kinds(run)
    assert not any(e["kind"] in ("finished", "cancelled", "failed") for e in events)
    assert RunDir.open(run).status() == "interrupted"
    assert not (run / "report.md").exists() and (run / "run.lock").is_file()
    checkpoint = json.loads(state.read_text())["block"]
    assert checkpoint in (0, 1)

    # options that would change the result are refused, and nothing is touched
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    bad = real_cli("prune", "--resume", "run", "--nsamples", "8", "--method", "wanda")
    assert bad.exit_code == 2
    assert one_error_line(bad.stderr) == (
        "error: --resume continues the run with the settings in its config.json; --method, "
        "--nsamples cannot change: drop them, or start a new run"
    )
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    # the resume (with the weights offloaded to the CPU this time, which may change):
    # same result as the uninterrupted run, one story in events.jsonl
    result = real_cli(
        "prune", "--resume", "run", "--keep-checkpoints", "--offload", "cpu", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert "took over a stale lock" in result.stderr
    assert f"run directory: run (resuming after block {checkpoint})" in result.stderr
    code, ref_stdout, ref_stderr = reference.wait()
    assert code == 0, ref_stderr
    resumed, uninterrupted = json.loads(result.stdout), json.loads(ref_stdout)
    for key in ("ppl_dense", "ppl_dense_act", "ppl", "weight_sparsity", "act_sparsity"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-5), key
    assert json.loads((run / "config.json").read_text())["offload"] == "cpu"
    story = kinds(run)
    assert story.count("run_started") == 1 and story[-1] == "finished"
    assert sum(k in ("finished", "cancelled", "failed") for k in story) == 1
    finished = [e["block"] for e in events_of(run) if e["kind"] == "block_finished"]
    assert finished == [0, 1]
    notes = [e["text"] for e in events_of(run) if e["kind"] == "note"]
    assert f"resumed from the checkpoint after block {checkpoint}" in notes
    assert RunDir.open(run).status() == "finished" and not (run / "run.lock").exists()
    report = (run / "report.md").read_text()
    assert "**Status: finished**" in report
    per_block = report.split("## Per block", 1)[1].split("##", 1)[0]
    assert [line.split("|")[1].strip() for line in per_block.splitlines()[4:6]] == ["0", "1"]

    # --keep-checkpoints kept them (and is recorded); the reference run removed its own
    assert (run / "checkpoints" / "block-0001.pt").is_file()
    assert json.loads((run / "config.json").read_text())["keep_checkpoints"] is True
    assert not (real_cli.root / "ref" / "checkpoints").exists()

    # a finished run has nothing to resume
    again = real_cli("prune", "--resume", "run")
    assert again.exit_code == 2
    assert "holds a finished run: there is nothing to resume" in one_error_line(again.stderr)


def test_the_new_options_reach_the_config(cli: Cli) -> None:
    result = cli("prune", *FAST, "--no-checkpoints", "--keep-checkpoints", "--dtype", "float16")
    assert result.exit_code == 0, result.stderr
    config = cli.configs[-1]
    assert (config.checkpoints, config.keep_checkpoints, config.dtype) == (False, True, "float16")


# --------------------------------------------------------------------------------------------
# RunDir.resume on scripted events


def stopped_run(path: Path, events: list[ev.Event], checkpoint: int | None) -> RunDir:
    """A run directory holding ``events``, a stale lock and a checkpoint after ``checkpoint``."""
    run_dir = RunDir.create(scripted.CONFIG, out=path)
    for event in events:
        run_dir.append(event)
    run_dir.release()
    lock = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (path / "run.lock").write_text(json.dumps(lock))
    (path / "report.md").write_text("stale")
    if checkpoint is not None:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "state.json").write_text(json.dumps({"block": checkpoint}))
    return run_dir


def test_resume_keeps_the_events_up_to_the_checkpointed_block(tmp_path: Path) -> None:
    head = [scripted.run_started(), *scripted.block_events(0, 1.0)]
    partial = scripted.block_events(1, 2.0)[:4]  # block 1 started, not finished
    stopped_run(tmp_path, [*head, *partial, ev.Cancelled(t=3.0, block=1)], checkpoint=0)
    run_dir = RunDir.resume(tmp_path)
    try:
        assert run_dir.resumed_block == 0
        assert run_dir.events() == head
        assert (tmp_path / "events.jsonl").read_text().endswith("\n")
        assert not (tmp_path / "report.md").exists()
        assert any("took over a stale lock" in note for note in run_dir.notes)
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    finally:
        run_dir.release()


def test_resume_drops_a_block_finished_after_the_checkpoint(tmp_path: Path) -> None:
    """Killed between a block's event and its checkpoint: that block is done again."""
    head = [scripted.run_started(), *scripted.block_events(0, 1.0)]
    stopped_run(tmp_path, [*head, *scripted.block_events(1, 2.0)], checkpoint=0)
    run_dir = RunDir.resume(tmp_path)
    run_dir.release()
    assert run_dir.events() == head


def test_resume_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    head = [scripted.run_started(), *scripted.block_events(0, 1.0)]
    stopped_run(tmp_path, head, checkpoint=0)
    with (tmp_path / "events.jsonl").open("a") as stream:
        stream.write('{"kind": "block_star')
    RunDir.resume(tmp_path).release()
    assert RunDir.open(tmp_path).events() == head
    text = (tmp_path / "events.jsonl").read_text()
    assert text.endswith("}\n")  # the torn fragment is gone: appends start on a new line
    assert len(text.splitlines()) == len(head)


@pytest.mark.parametrize(
    ("events", "checkpoint", "message"),
    [
        (scripted.finished_run(), 1, "holds a finished run"),
        ([scripted.run_started(), *scripted.block_events(0, 1.0)], None, "no checkpoint in"),
        ([scripted.run_started()], 0, "does not show that block finished"),
    ],
    ids=["finished", "no-checkpoint", "inconsistent"],
)
def test_resume_refuses(
    tmp_path: Path, events: list[ev.Event], checkpoint: int | None, message: str
) -> None:
    stopped_run(tmp_path, events, checkpoint)
    before = (tmp_path / "events.jsonl").read_bytes()
    from solver.errors import InputError

    with pytest.raises(InputError, match=message):
        RunDir.resume(tmp_path)
    assert (tmp_path / "events.jsonl").read_bytes() == before
    assert not (tmp_path / "run.lock").exists()  # the stale lock was taken over, then released


def test_resume_refuses_a_live_run(tmp_path: Path) -> None:
    from solver.errors import InputError

    live = RunDir.create(scripted.CONFIG, out=tmp_path)
    try:
        with pytest.raises(InputError, match="is in use by another run"):
            RunDir.resume(tmp_path)
    finally:
        live.release()


def test_resume_of_a_folder_that_is_not_a_run(real_cli: Cli) -> None:
    (real_cli.root / "empty").mkdir()
    result = real_cli("prune", "--resume", "empty")
    assert result.exit_code == 2
    assert "empty is not a run directory" in one_error_line(result.stderr)
