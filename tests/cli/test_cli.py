"""``duogpt`` with a fake solver: help, exit codes, stdout/stderr, bad input, report, runs, eval."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from duogpt_tui import cli as cli_mod
from duogpt_tui import runner
from duogpt_tui.progress import RunDisplay, cancel_on_signals
from duogpt_tui.runstore import RunDir
from solver import events as ev
from solver.config import RunConfig
from solver.errors import InputError
from tests.cli.conftest import Cli
from tests.report import scripted

FAST = ("--model", "tiny-random", "--nsamples", "4", "--seqlen", "32", "--eval-windows", "2")


def one_json(stdout: str) -> dict[str, Any]:
    """stdout must be exactly one JSON object on one line."""
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), stdout
    value = json.loads(stdout)
    assert isinstance(value, dict)
    return value


def one_error_line(stderr: str) -> str:
    """The stderr of a bad-input exit: one ``error:`` line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------- help


def test_root_help_lists_commands_and_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("prune", "report", "eval", "runs"):
        assert command in result.stdout
    assert "Exit codes: 0 done, 1 the run failed, 2 bad input" in " ".join(result.stdout.split())


def test_prune_help_shows_the_config_defaults(cli: Cli) -> None:
    result = cli("prune", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    defaults = RunConfig()
    for flag, value in (
        ("--model", defaults.model),
        ("--calib", defaults.calib),
        ("--eval", defaults.eval),
        ("--method", defaults.method),
        ("--weight-sparsity", defaults.weight_sparsity),
        ("--act-sparsity", defaults.act_sparsity),
        ("--nsamples", defaults.nsamples),
        ("--seqlen", defaults.seqlen),
        ("--eval-windows", defaults.eval_windows),
        ("--alpha", defaults.alpha),
    ):
        assert flag in text
        assert f"[default: {value}]" in text, flag
    assert "a few minutes on a 2-core CPU" in text
    assert "130 cancelled" in text
    for flag in ("--act-order / --no-act-order", "--true-sequential / --all-at-once", "--json"):
        assert flag in text


def test_bare_command_prints_help(cli: Cli) -> None:
    result = cli()
    assert "Usage:" in result.stdout + result.stderr
    assert result.exit_code == 2


# --------------------------------------------------------------------- exit codes


def test_finished_run_exits_0_with_one_json_object(cli: Cli) -> None:
    result = cli("prune", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    data = one_json(result.stdout)
    [run_dir] = cli.run_dirs()
    assert data["run_dir"] == str(Path("runs") / run_dir.name)
    assert data["status"] == "finished" and data["method"] == "duogpt"
    assert (data["weight_sparsity"], data["act_sparsity"]) == (0.5, 0.47)
    assert (data["ppl_dense"], data["ppl"], data["seconds"]) == (1000.0, 1850.75, 5.0)
    assert "error" not in data
    assert "run directory:" in result.stderr and "block 1 done" in result.stderr
    for name in ("config.json", "events.jsonl", "report.md"):
        assert (run_dir / name).is_file()
    assert not (run_dir / "run.lock").exists()
    assert cli.configs == [RunConfig(model="tiny-random", nsamples=4, seqlen=32, eval_windows=2)]


def test_finished_run_prints_one_summary_line(cli: Cli) -> None:
    result = cli("prune", *FAST)
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("finished  duogpt  tiny-random  W 50.0%  X 47.0%")
    assert "ppl 1000.00 -> 1850.75" in result.stdout


def test_every_option_reaches_the_config(cli: Cli) -> None:
    args = [
        "prune", "--model", "m", "--calib", "c.txt", "--eval", "e.txt", "--method", "sparsegpt",
        "--weight-sparsity", "0.6", "--pattern", "2:4", "--act-sparsity", "0", "--nsamples", "3",
        "--seqlen", "16", "--eval-windows", "0", "--seed", "7", "--device", "cpu", "--alpha",
        "0.25", "--damping", "0.05", "--block-size", "64", "--act-rule", "threshold",
        "--act-order", "--residual-variant", "pruned", "--all-at-once", "--batch-size", "2",
        "--proxy-every", "1", "--proxy-windows", "2", "--no-save-model", "--no-eval-dense",
    ]  # fmt: skip
    assert cli(*args).exit_code == 0
    assert cli.configs == [
        RunConfig(
            model="m", calib="c.txt", eval="e.txt", method="sparsegpt", weight_sparsity=0.6,
            pattern="2:4", act_sparsity=0.0, nsamples=3, seqlen=16, eval_windows=0, seed=7,
            device="cpu", alpha=0.25, damping=0.05, block_size=64, act_rule="threshold",
            act_order=True, residual_variant="pruned", true_sequential=False, batch_size=2,
            proxy_every=1, proxy_windows=2, save_model=False, eval_dense=False,
        )
    ]  # fmt: skip


def test_failed_run_exits_1(cli: Cli) -> None:
    cli.use(scripted.failed_run())
    result = cli("prune", *FAST, "--json")
    assert result.exit_code == 1
    data = one_json(result.stdout)
    assert data["status"] == "failed" and data["error"].startswith("NaN in the statistics")
    assert "error: NaN in the statistics" in result.stderr
    assert "Traceback" not in result.stderr
    debug = cli("prune", *FAST, "--debug")
    assert debug.exit_code == 1 and "RunError: NaN" in debug.stderr


def test_input_failure_during_the_run_exits_2(cli: Cli) -> None:
    cli.use(scripted.failed_run("input"))
    result = cli("prune", *FAST, "--json")
    assert result.exit_code == 2
    data = one_json(result.stdout)
    assert (data["status"], data["category"]) == ("failed", "input")
    # the pre-flight estimate (and its warnings), the run directory, then the error
    lines = [line for line in result.stderr.split("\n") if not line.startswith("warning: ")]
    after = "\n".join(lines).split("\n", 2)
    assert after[0].startswith("pre-flight: ") and after[1].startswith("run directory: ")
    assert one_error_line(after[2]).startswith("error: model path /nope")


def test_cancelled_run_exits_130(cli: Cli) -> None:
    cli.use(scripted.cancelled_run())
    result = cli("prune", *FAST, "--json")
    assert result.exit_code == 130
    data = one_json(result.stdout)
    assert data["status"] == "cancelled" and data["stopped_block"] == 1
    report = (cli.run_dirs()[0] / "report.md").read_text()
    assert "**Status: cancelled** at block 1 of 2" in report


def test_a_crashing_solver_still_ends_the_run(cli: Cli) -> None:
    cli.use(scripted.raising_source())
    result = cli("prune", *FAST, "--json")
    assert result.exit_code == 1
    assert "ZeroDivisionError: boom" in one_json(result.stdout)["error"]
    assert RunDir.open(cli.run_dirs()[0]).status() == "failed"


def test_ctrl_c_cancels_the_run_and_restores_the_handlers(cli: Cli) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cli.use(scripted.interrupting_source())
    result = cli("prune", *FAST, "--json")
    assert result.exit_code == 130, result.stderr
    assert one_json(result.stdout)["status"] == "cancelled"
    assert "press Ctrl-C again" in result.stderr
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert RunDir.open(cli.run_dirs()[0]).status() == "cancelled"


def test_cancel_on_signals_second_signal_interrupts() -> None:
    import threading

    cancel = threading.Event()
    with cancel_on_signals(cancel):
        signal.raise_signal(signal.SIGTERM)
        assert cancel.is_set()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--weight-sparsity", "abc"), "--weight-sparsity must be a number, got 'abc'"),
        (("--weight-sparsity", "1.5"), "--weight-sparsity must be a number in [0, 1), got 1.5"),
        (("--weight-sparsity", "-0.1"), "--weight-sparsity must be a number in [0, 1)"),
        (("--weight-sparsity", "nan"), "--weight-sparsity must be a finite number"),
        (("--act-sparsity", "1"), "--act-sparsity must be a number in [0, 1)"),
        (("--pattern", "3:2"), "malformed pattern '3:2'"),
        (("--pattern", "x"), "malformed pattern 'x'"),
        (("--method", "obs"), "unknown method 'obs'"),
        (("--nsamples", "1.5"), "--nsamples must be an integer, got '1.5'"),
        (("--nsamples", "0"), "--nsamples must be an integer >= 1"),
        (("--seqlen", "x"), "--seqlen must be an integer"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--act-rule", "median"), "unknown activation rule"),
        (("--damping", "0"), "--damping must be a number in (0, 10)"),
        (("--no-such-option",), "No such option: --no-such-option"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli("prune", *args)
    assert result.exit_code == 2
    assert message in one_error_line(result.stderr)
    assert result.stdout == ""
    assert cli.run_dirs() == [] and cli.configs == []


def test_bad_input_with_json_still_prints_one_object(cli: Cli) -> None:
    result = cli("prune", "--weight-sparsity", "abc", "--json")
    assert result.exit_code == 2
    data = one_json(result.stdout)
    assert (data["status"], data["category"], data["run_dir"]) == ("failed", "input", None)


def test_preflight_errors_exit_2(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def preflight(config: RunConfig) -> None:
        raise InputError("model '/nope' not found: give a built-in name")

    monkeypatch.setattr(runner, "preflight", preflight)  # the module the CLI calls
    result = cli("prune", "--model", "/nope")
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == "error: model '/nope' not found: give a built-in name"
    debug = cli("prune", "--model", "/nope", "--debug")
    assert debug.exit_code == 2 and "Traceback" in debug.stderr
    assert cli.run_dirs() == []


def test_out_holding_another_run_is_refused_and_untouched(cli: Cli) -> None:
    assert cli("prune", *FAST, "--out", "mine").exit_code == 0
    before = {p.name: p.read_bytes() for p in (cli.root / "mine").iterdir() if p.is_file()}
    cli.use(scripted.failed_run())
    result = cli("prune", *FAST, "--out", "mine", "--method", "wanda")
    assert result.exit_code == 2
    assert "already holds another run (finished)" in one_error_line(result.stderr)
    after = {p.name: p.read_bytes() for p in (cli.root / "mine").iterdir() if p.is_file()}
    assert after == before
    again = cli("prune", *FAST, "--out", "mine", "--method", "wanda", "--overwrite")
    assert again.exit_code == 1
    assert RunDir.open(cli.root / "mine").config().method == "wanda"


def test_out_not_writable_is_refused(cli: Cli) -> None:
    (cli.root / "a-file").write_text("x")
    result = cli("prune", *FAST, "--out", "a-file/run")
    assert result.exit_code == 2
    assert "cannot create the run directory" in one_error_line(result.stderr)
    assert (cli.root / "a-file").read_text() == "x"


# --------------------------------------------------------------------- report and runs


def test_report_reproduces_report_md_byte_identically(cli: Cli) -> None:
    for events in (scripted.finished_run(), scripted.cancelled_run(), scripted.failed_run()):
        cli.use(events)
        assert cli("prune", *FAST).exit_code in (0, 1, 130)
    for run_dir in cli.run_dirs():
        original = (run_dir / "report.md").read_bytes()
        (run_dir / "report.md").unlink()
        result = cli("report", str(run_dir))
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"{run_dir / 'report.md'}\n"
        assert (run_dir / "report.md").read_bytes() == original


def test_report_to_another_file_respects_overwrite(cli: Cli) -> None:
    assert cli("prune", *FAST, "--out", "run").exit_code == 0
    (cli.root / "mine.md").write_text("my notes")
    refused = cli("report", "run", "-o", "mine.md")
    assert refused.exit_code == 2 and "--overwrite" in one_error_line(refused.stderr)
    assert (cli.root / "mine.md").read_text() == "my notes"
    assert cli("report", "run", "-o", "mine.md", "--overwrite").exit_code == 0
    assert (cli.root / "mine.md").read_bytes() == (cli.root / "run" / "report.md").read_bytes()
    assert cli("report", "run", "-o", "new.md").exit_code == 0
    assert cli("report", "run", "-o", "run/report.md").exit_code == 0
    printed = cli("report", "run", "-o", "-")
    assert printed.stdout == (cli.root / "run" / "report.md").read_text()


def test_report_of_a_folder_that_is_not_a_run(cli: Cli) -> None:
    result = cli("report", str(cli.root))
    assert result.exit_code == 2
    assert "is not a run directory" in one_error_line(result.stderr)


def test_runs_json_lists_newest_first(cli: Cli) -> None:
    cli("prune", *FAST, "--out", "runs/a")
    cli.use(scripted.cancelled_run())
    cli("prune", *FAST, "--out", "runs/b")
    import os

    os.utime(cli.root / "runs" / "a" / "config.json", (1_600_000_000, 1_600_000_000))
    result = cli("runs", "--json")
    assert result.exit_code == 0
    data = one_json(result.stdout)
    assert [row["run_id"] for row in data["runs"]] == ["b", "a"]
    assert [row["status"] for row in data["runs"]] == ["cancelled", "finished"]
    assert data["runs"][1]["ppl"] == 1850.75
    table = cli("runs")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["started", "status", "method"]
    assert len(table.stdout.splitlines()) == 3


def test_runs_without_runs(cli: Cli) -> None:
    result = cli("runs")
    assert (result.exit_code, result.stdout) == (0, "")
    assert "no runs" in result.stderr
    assert one_json(cli("runs", "--json").stdout)["runs"] == []


# --------------------------------------------------------------------- eval


def fake_evaluate(target: str, **kwargs: Any) -> dict[str, Any]:
    """A stand-in for solver.run.evaluate.evaluate."""
    if target == "/nope":
        raise InputError("model '/nope' not found")
    kwargs["progress"](1, 2)
    kwargs["progress"](2, 2)
    return {
        "model": target,
        "ppl": 47.625,
        "act_sparsity": kwargs["act_sparsity"] or 0.0,
        "act_rule": "topk",
        "protocol": {"text": kwargs["eval_text"], "windows": kwargs["windows"]},
    }


def test_eval_prints_perplexity(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_mod, "evaluator", lambda: fake_evaluate)
    result = cli("eval", "tiny-random", "--eval-windows", "2", "--act-sparsity", "0.5", "--json")
    assert result.exit_code == 0, result.stderr
    data = one_json(result.stdout)
    assert (data["target"], data["ppl"], data["act_sparsity"]) == ("tiny-random", 47.625, 0.5)
    assert data["protocol"] == {"text": "moby-dick", "windows": 2}
    assert "eval: 1/2" in result.stderr
    line = cli("eval", "tiny-random")
    assert line.stdout.startswith("ppl 47.62  tiny-random  X 0.0%")


def test_eval_of_a_run_directory_uses_its_evaluation_window(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    def recording(target: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return fake_evaluate(target, **kwargs)

    monkeypatch.setattr(cli_mod, "evaluator", lambda: recording)
    run = tmp_path / "run"
    run.mkdir()
    config = RunConfig(model="tiny-random", seqlen=128, eval_seqlen=64, eval_windows=3)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    assert cli("eval", str(run)).exit_code == 0
    assert (seen["seqlen"], seen["windows"]) == (64, 3)
    assert cli("eval", str(run), "--seqlen", "32").exit_code == 0
    assert seen["seqlen"] == 32


def test_eval_bad_input_exits_2(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_mod, "evaluator", lambda: fake_evaluate)
    assert "model '/nope' not found" in one_error_line(cli("eval", "/nope").stderr)
    result = cli("eval", "x", "--act-sparsity", "abc")
    assert result.exit_code == 2 and "--act-sparsity must be a number" in result.stderr
    assert cli("eval", "x", "--eval-windows", "0").exit_code == 2


# --------------------------------------------------------------------- the progress display


def test_live_display_draws_a_progress_bar() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    display = RunDisplay(console)
    assert display.live
    with display:
        for event in scripted.finished_run():
            display.show(event)
        display.show(ev.Progress(phase="eval", done=1, total=2, label="pruned"))
    text = stream.getvalue()
    assert "perplexity (pruned): 1850.75" in text
    assert "ETA" in text and "block 1 done" in text


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("duogpt ")


def test_a_stale_lock_is_taken_over_with_one_note(cli: Cli) -> None:
    import socket

    from tests.report.test_runstore import dead_pid

    assert cli("prune", *FAST, "--out", "mine").exit_code == 0
    lock = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}
    (cli.root / "mine" / "run.lock").write_text(json.dumps(lock))
    result = cli("prune", *FAST, "--out", "mine", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("took over a stale lock") == 1
    assert not (cli.root / "mine" / "run.lock").exists()
