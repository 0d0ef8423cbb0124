"""The runner: every run directory ends with one terminal event, a report and no lock."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from duogpt_tui import report, runner
from duogpt_tui.report import render_markdown
from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError, RunError
from solver.run.stop import RunCancelled, RunStopped
from tests.report import scripted


def run_all(tmp_path: Path, source: Any) -> tuple[list[ev.Event], RunDir]:
    """Execute a fake source to the end; return what was yielded and the run directory."""
    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    yielded = list(runner.execute(scripted.CONFIG, run_dir, source=source))
    return yielded, RunDir.open(run_dir.path)


def assert_ended(run_dir: RunDir, kind: str) -> None:
    """One terminal event, last, of ``kind``; a report rendered from the events; no lock."""
    events = run_dir.events()
    assert [e.kind for e in events if ev.is_terminal(e)] == [kind]
    assert ev.is_terminal(events[-1])
    expected = render_markdown(events, config=scripted.CONFIG.to_dict())
    assert (run_dir.path / "report.md").read_text(encoding="utf-8") == expected
    assert not (run_dir.path / "run.lock").exists()
    assert run_dir.status() == kind


def totals_of(finished: ev.Event) -> ev.RunTotals:
    """The totals that a :class:`~solver.events.Finished` was made from."""
    names = [f.name for f in dataclasses.fields(ev.RunTotals)]
    return ev.RunTotals(**{name: getattr(finished, name) for name in names})


def returning_source(events: list[ev.Event]) -> Any:
    """A fake source like the pipeline: yields ``events`` but the last, returns its totals."""

    def source(
        config: RunConfig, cancel: Any = None, workdir: Path | None = None
    ) -> Generator[ev.Event, None, ev.RunTotals]:
        yield from events[:-1]
        return totals_of(events[-1])

    return source


def test_a_finished_run_is_recorded_and_reported(tmp_path: Path) -> None:
    seen: list[Any] = []
    source = returning_source(scripted.finished_run())

    def watched(config: RunConfig, cancel: Any, workdir: Path) -> Iterator[ev.Event]:
        seen.append((config, cancel, workdir))
        return source(config, cancel, workdir)  # type: ignore[no-any-return]

    yielded, run_dir = run_all(tmp_path, watched)
    assert yielded == scripted.finished_run() == run_dir.events()
    assert seen == [(scripted.CONFIG, None, run_dir.path)]
    assert_ended(run_dir, "finished")


def test_the_runner_makes_finished_from_the_returned_totals() -> None:
    totals = ev.RunTotals(seconds=7.25, weight_sparsity=0.5, model_dir="m", timings={"solve": 1.0})
    finished = runner.finished(totals)
    assert isinstance(finished, ev.Finished) and finished.t == 7.25
    assert totals_of(finished) == totals
    # the line in events.jsonl: ``t`` first, then the totals, field for field
    fields = [f.name for f in dataclasses.fields(ev.Finished)]
    assert fields == ["t", *(f.name for f in dataclasses.fields(ev.RunTotals))]
    assert list(ev.to_dict(finished)) == ["kind", *fields]


def test_a_replayed_terminal_event_is_kept_as_it_is(tmp_path: Path) -> None:
    """A replay that yields its own terminal event (and returns totals too) gets no other."""
    replay = scripted.cancelled_run()

    def source(
        config: RunConfig, cancel: Any, workdir: Path
    ) -> Generator[ev.Event, None, ev.RunTotals]:
        yield from replay
        return ev.RunTotals(seconds=9.0)

    yielded, run_dir = run_all(tmp_path, source)
    assert yielded == replay == run_dir.events()
    assert_ended(run_dir, "cancelled")


@pytest.mark.parametrize(
    "source",
    [
        returning_source(scripted.finished_run()),
        scripted.scripted_source(scripted.failed_run()),
        scripted.raising_source(after=3),
        scripted.silent_source(),
    ],
    ids=["totals", "replay", "raising", "silent"],
)
def test_stream_ends_as_execute_ends_without_a_run_directory(tmp_path: Path, source: Any) -> None:
    recorded, _ = run_all(tmp_path, source)
    streamed = list(runner.stream(scripted.CONFIG, source=source))
    assert streamed == recorded
    assert sum(ev.is_terminal(e) for e in streamed) == 1 and ev.is_terminal(streamed[-1])
    assert list(tmp_path.iterdir()) == [tmp_path / "run"], "stream writes nothing"


def test_stream_hands_the_source_its_arguments_and_closes_it(tmp_path: Path) -> None:
    got: list[Any] = []
    closed: list[bool] = []

    def source(
        config: RunConfig, cancel: Any, workdir: Path | None, resume: bool = False
    ) -> Iterator[ev.Event]:
        got.append((cancel, workdir, resume))
        try:
            yield from scripted.finished_run()
        finally:
            closed.append(True)

    token = object()
    events = runner.stream(scripted.CONFIG, token, tmp_path, source=source, resume=True)  # type: ignore[arg-type]
    assert next(events) == scripted.finished_run()[0]
    events.close()
    assert got == [(token, tmp_path, True)] and closed == [True]
    assert list(runner.stream(scripted.CONFIG, source=stopping_source(RunCancelled())))[-1] == (
        ev.Cancelled(t=4.5, block=1, reason="cancelled while pruning")
    )


def test_a_raising_source_ends_with_a_failed_event(tmp_path: Path) -> None:
    yielded, run_dir = run_all(tmp_path, scripted.raising_source(after=3))
    failed = yielded[-1]
    assert isinstance(failed, ev.Failed) and failed.category == "run"
    assert "ZeroDivisionError: boom" in failed.error and "\n" not in failed.error
    assert "Traceback" in failed.detail
    assert failed.t == yielded[-2].t
    assert_ended(run_dir, "failed")


def test_an_input_error_from_the_source_is_an_input_failure(tmp_path: Path) -> None:
    def source(config: RunConfig, cancel: Any, workdir: Path) -> Iterator[ev.Event]:
        raise InputError("model 'x' not found: give a built-in name")
        yield  # pragma: no cover

    yielded, run_dir = run_all(tmp_path, source)
    assert yielded == run_dir.events()
    [failed] = yielded
    assert isinstance(failed, ev.Failed)
    assert (failed.category, failed.error) == ("input", "model 'x' not found: give a built-in name")
    assert_ended(run_dir, "failed")


def test_a_source_without_a_terminal_event_ends_failed(tmp_path: Path) -> None:
    yielded, run_dir = run_all(tmp_path, scripted.silent_source())
    assert isinstance(yielded[-1], ev.Failed)
    assert "without saying how the run ended" in yielded[-1].error
    assert_ended(run_dir, "failed")


def test_events_after_the_terminal_one_are_dropped(tmp_path: Path) -> None:
    events = [*scripted.cancelled_run(), ev.Note(text="late"), ev.Finished(t=9.0)]
    yielded, run_dir = run_all(tmp_path, scripted.scripted_source(events))
    assert yielded == scripted.cancelled_run()
    assert_ended(run_dir, "cancelled")


def test_closing_the_generator_early_records_a_cancel(tmp_path: Path) -> None:
    closed: list[bool] = []

    def source(config: RunConfig, cancel: Any, workdir: Path) -> Iterator[ev.Event]:
        try:
            yield from scripted.finished_run()
        finally:
            closed.append(True)

    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    events = runner.execute(scripted.CONFIG, run_dir, source=source)
    for _, event in zip(range(8), events, strict=False):
        assert not ev.is_terminal(event)
    events.close()
    assert closed == [True], "the source is closed too"
    cancelled = RunDir.open(run_dir.path).events()[-1]
    assert isinstance(cancelled, ev.Cancelled) and cancelled.block == 0
    assert_ended(RunDir.open(run_dir.path), "cancelled")


def test_keyboard_interrupt_records_a_cancel_and_propagates(tmp_path: Path) -> None:
    def source(config: RunConfig, cancel: Any, workdir: Path) -> Iterator[ev.Event]:
        yield from scripted.finished_run()[:4]
        raise KeyboardInterrupt

    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        list(runner.execute(scripted.CONFIG, run_dir, source=source))
    assert_ended(RunDir.open(run_dir.path), "cancelled")


def test_the_cancel_token_reaches_the_source(tmp_path: Path) -> None:
    class Token:
        def is_set(self) -> bool:
            return True

    token = Token()
    got: list[Any] = []

    def source(config: RunConfig, cancel: Any, workdir: Path) -> Iterator[ev.Event]:
        got.append(cancel)
        yield ev.Cancelled(t=0.0)

    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    list(runner.execute(scripted.CONFIG, run_dir, cancel=token, source=source))
    assert got == [token]


def test_a_report_bug_does_not_lose_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("report bug")

    monkeypatch.setattr(report, "render_markdown", broken)  # the module the runner calls
    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    list(
        runner.execute(
            scripted.CONFIG, run_dir, source=scripted.scripted_source(scripted.finished_run())
        )
    )
    assert any("report bug" in note for note in run_dir.notes)
    assert RunDir.open(run_dir.path).status() == "finished"
    assert not (run_dir.path / "run.lock").exists()


def test_a_missing_pipeline_ends_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Any:
        raise ImportError("No module named 'solver.run.pipeline'")

    monkeypatch.setattr(runner, "pipeline_source", missing)
    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    [failed] = list(runner.execute(scripted.CONFIG, run_dir))
    assert isinstance(failed, ev.Failed) and "ImportError" in failed.error
    assert_ended(RunDir.open(run_dir.path), "failed")


# -- the runner is the one place that makes Finished, Failed and Cancelled -----------------------


def stopping_source(cause: BaseException, t: float = 4.5, block: int = 1) -> Any:
    """A fake source that yields a few events, then stops like the pipeline: ``RunStopped``."""

    def source(config: RunConfig, cancel: Any, workdir: Path) -> Iterator[ev.Event]:
        yield from scripted.finished_run()[:3]
        raise RunStopped(cause, t=t, block=block, phase="while pruning")

    return source


def test_a_cancelled_pipeline_becomes_the_cancelled_event(tmp_path: Path) -> None:
    yielded, run_dir = run_all(tmp_path, stopping_source(RunCancelled()))
    assert yielded[-1] == ev.Cancelled(t=4.5, block=1, reason="cancelled while pruning")
    assert yielded == run_dir.events()
    assert_ended(run_dir, "cancelled")


@pytest.mark.parametrize(
    ("cause", "category"),
    [(RunError("block 1 mlp.up_proj: NaN; raise --damping"), "run"), (InputError("bad"), "input")],
)
def test_a_failed_pipeline_keeps_its_one_line(
    tmp_path: Path, cause: Exception, category: str
) -> None:
    yielded, run_dir = run_all(tmp_path, stopping_source(cause))
    failed = yielded[-1]
    assert isinstance(failed, ev.Failed) and (failed.t, failed.block) == (4.5, 1)
    assert (failed.error, failed.category) == (str(cause), category)
    assert type(cause).__name__ in failed.detail
    assert_ended(run_dir, "failed")


def test_a_bug_in_the_pipeline_is_marked_unexpected() -> None:
    try:
        raise KeyError("layer")
    except KeyError as bug:
        stop = RunStopped(bug, t=2.0, block=0, phase="while pruning")
    failed = runner.terminal_event(stop)
    assert isinstance(failed, ev.Failed) and failed.category == "run"
    assert failed.error.startswith("unexpected KeyError: 'layer' (see events.jsonl")
    assert "Traceback" in failed.detail and (failed.t, failed.block) == (2.0, 0)


def test_an_ending_that_cannot_be_written_is_still_yielded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    real = run_dir.append

    def append(event: ev.Event) -> None:
        if ev.is_terminal(event):
            raise OSError(28, "No space left on device")
        real(event)

    monkeypatch.setattr(run_dir, "append", append)
    source = stopping_source(RunError("boom"))
    yielded = list(runner.execute(scripted.CONFIG, run_dir, source=source))
    assert isinstance(yielded[-1], ev.Failed) and yielded[-1].error == "boom"
    assert any("could not record how the run ended (failed)" in note for note in run_dir.notes)
    assert not (run_dir.path / "run.lock").exists()


def test_after_a_runner_bug_the_run_directory_says_how_the_run_ended(tmp_path: Path) -> None:
    run_dir = RunDir.create(scripted.CONFIG, out=tmp_path / "run")
    for event in scripted.finished_run()[:4]:
        run_dir.append(event)
    ending = runner.ending_after_error(scripted.CONFIG, run_dir, RuntimeError("disk on fire"))
    assert isinstance(ending, ev.Failed) and "RuntimeError: disk on fire" in ending.error
    reopened = RunDir.open(run_dir.path)
    assert reopened.events()[-1] == ending
    assert_ended(reopened, "failed")
    # asked again, it gives what is recorded and records nothing more
    again = runner.ending_after_error(scripted.CONFIG, reopened, RuntimeError("again"))
    assert again == ending and len(RunDir.open(run_dir.path).events()) == 5
