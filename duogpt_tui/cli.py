"""``duogpt``: the headless command line (Typer) — prune, report, eval, runs.

stdout carries results only: a one-line summary, or with ``--json`` exactly one JSON object.
Progress and notices go to stderr (a progress bar with ETA on a terminal, plain periodic lines
otherwise). Exit codes: 0 done, 1 run failed, 2 bad input, 130 cancelled. Bad input is one
``error: ...`` line on stderr, never a traceback (``--debug`` shows it).

Heavy modules (torch, transformers, the solver's pipeline) load only when a command needs them,
so ``duogpt --help`` is instant.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from duogpt_tui import formatting, ranks, runner, summary
from duogpt_tui import report as report_mod
from duogpt_tui.cli_errors import OneLineErrorGroup, command_errors, input_error
from duogpt_tui.cli_options import with_options
from duogpt_tui.cli_speed import register as register_speed
from duogpt_tui.exitcodes import EXIT_CODES_HELP, ExitCode
from duogpt_tui.preflight_text import estimate_lines
from duogpt_tui.progress import RunDisplay, cancel_on_signals, stderr_console
from duogpt_tui.progress import notice as _notice
from duogpt_tui.runstore import CONFIG_FILE, RUNS_ROOT, RunDir, list_runs
from solver import events as ev
from solver.config import OPTION, RunConfig
from solver.errors import InputError
from solver.options import Surface

DEFAULTS = RunConfig()
"""The run defaults: every option's default comes from here, never from a copy."""


app = typer.Typer(
    name="duogpt",
    cls=OneLineErrorGroup,
    help="DuoGPT dual-sparse pruning of language models, headless (the workbench is duogpt-tui).",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    """Print the installed version and exit (``--version``)."""
    if value:
        from importlib import metadata

        try:
            version = metadata.version("duogpt-tui")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"duogpt {version}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """DuoGPT dual-sparse pruning of language models, headless (the workbench is duogpt-tui)."""


# --------------------------------------------------------------------- duogpt prune


RESUME_OPTIONS = frozenset(
    {"device", "offload", "nproc", "keep_checkpoints", "json_output", "debug", "resume"}
)
"""The options that may go with ``--resume`` (the run's own config.json gives the rest)."""


@app.command(epilog=EXIT_CODES_HELP)
@with_options(Surface.PRUNE)
def prune(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Run directory (default: a new folder under --runs-dir).", show_default=False
        ),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where new run directories go.")] = RUNS_ROOT,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run that --out already holds.")
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="RUN_DIR",
            help="Continue a stopped run from its last complete block, with its own settings "
            "(only --device, --offload, --nproc and --keep-checkpoints may change).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    **values: Any,
) -> None:
    """Prune a model with DuoGPT (or a baseline), evaluate it, and write a run directory.

    The defaults (SmolLM2-135M, 16 x 256 calibration tokens of State of the Union addresses,
    16 x 256 evaluation tokens of Moby-Dick) finish in a few minutes on a 2-core CPU, offline.
    The run directory holds config.json, events.jsonl, report.md and the pruned model (model/).
    A run that was stopped (Ctrl-C, kill, crash) continues with --resume RUN_DIR.
    """
    console = stderr_console()
    if resume is not None:
        _resume(ctx, console, resume.expanduser(), values, json_output, debug)
    try:
        if _given(ctx, "task_limit") and values["task_limit"] < 1:
            raise InputError(f"--limit must be an integer >= 1, got {values['task_limit']}")
        config = build_config(**values)
        runner.preflight(config)
        if ranks.launched_world() > 1:  # the user's torchrun: rank 0 alone writes the run
            config = config.replace(nproc=ranks.launched_world())
            if ranks.rank() != 0:
                raise typer.Exit(ranks.run_quietly(config))
        run_dir = RunDir.create(
            config,
            out=out.expanduser() if out is not None else None,
            runs_root=runs_dir.expanduser(),
            overwrite=overwrite,
        )
    except InputError as exc:
        input_error(console, exc, debug, json_output)
    for note in run_dir.notes:
        _notice(console, f"note: {note}")
    preflight_estimate(console, config)
    result = _run_with_display(config, run_dir, console)
    _print_result(console, result, run_dir, json_output, debug)
    raise typer.Exit(summary.exit_code(result))


def _resume(
    ctx: typer.Context,
    console: Console,
    path: Path,
    values: dict[str, Any],
    json_output: bool,
    debug: bool,
) -> NoReturn:
    """``duogpt prune --resume RUN_DIR``: continue a stopped run with its own configuration.

    Options that define the run are refused (exit 2): a resumed run must give the same result
    as an uninterrupted one. ``--device``, ``--offload`` (where the weights wait: it does not
    change the result), ``--nproc`` (the checkpoint holds every rank's streams) and
    ``--keep-checkpoints`` may change.
    """
    try:
        given = sorted(
            "--" + name.replace("_", "-")
            for name in ctx.params
            if name not in RESUME_OPTIONS and _given(ctx, name)
        )
        if given:
            raise InputError(
                f"--resume continues the run with the settings in its config.json; "
                f"{', '.join(given)} cannot change: drop {'them' if len(given) > 1 else 'it'}, "
                "or start a new run"
            )
        config = RunDir.open(path).config()
        changes: dict[str, Any] = {}
        for name in ("device", "offload", "nproc"):
            if _given(ctx, name):
                changes[name] = values[name]
        if values["keep_checkpoints"]:
            changes["keep_checkpoints"] = True
        config = config.replace(**changes).validate()
        runner.preflight(config)
        if ranks.launched_world() > 1:  # the user's torchrun: the other ranks only read the run
            config = config.replace(nproc=ranks.launched_world())
            if ranks.rank() != 0:
                raise typer.Exit(ranks.run_quietly(config, workdir=path, resume=True))
        run_dir = RunDir.resume(path)
        if changes:
            run_dir.write_config(config)
    except InputError as exc:
        input_error(console, exc, debug, json_output)
    for note in run_dir.notes:
        _notice(console, f"note: {note}")
    preflight_estimate(console, config)
    result = _run_with_display(config, run_dir, console, resume=True)
    _print_result(console, result, run_dir, json_output, debug)
    raise typer.Exit(summary.exit_code(result))


def _given(ctx: typer.Context, name: str) -> bool:
    """True when the option ``name`` was given on the command line (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def preflight_estimate(console: Console, config: RunConfig) -> None:
    """Print the pre-flight estimate and its warnings (:func:`estimate_lines`) on stderr."""
    try:
        lines = estimate_lines(config)
    except InputError:  # the device: the pre-flight check has said so already
        return
    for line in lines.lines:
        _notice(console, line)


def build_config(**values: Any) -> RunConfig:
    """A validated :class:`RunConfig` from option values.

    Raises:
        InputError: a value is out of range or malformed.
    """
    return RunConfig(**values).validate()


def _run_with_display(
    config: RunConfig, run_dir: RunDir, console: Console, resume: bool = False
) -> dict[str, Any]:
    """Execute the run with Ctrl-C/SIGTERM handling and progress on stderr; return its result."""
    cancel = threading.Event()
    display = RunDisplay(console, cancel=cancel)
    notes_before = len(run_dir.notes)
    if resume:
        display.line(
            f"run directory: {run_dir.path} (resuming after block {run_dir.resumed_block})"
        )
    else:
        display.line(f"run directory: {run_dir.path}")
    with cancel_on_signals(cancel), display:
        # with --nproc N the launcher's ranks are the source; this process records their run
        source = ranks.source_for(config)
        events = runner.execute(config, run_dir, cancel, source=source, resume=resume)
        try:
            for event in events:
                display.show(event)
        except KeyboardInterrupt:
            display.line("stopped at once (second interrupt)")
        finally:
            if isinstance(events, Generator):  # stop the run if the loop ended early
                events.close()
    for note in run_dir.notes[notes_before:]:
        _notice(console, f"note: {note}")
    return summary.run_result(run_dir.events(), run_dir.path, config.to_dict())


def _print_result(
    console: Console, result: dict[str, Any], run_dir: RunDir, json_output: bool, debug: bool
) -> None:
    """Print the result on stdout and, for a failed run, the error on stderr."""
    if result["status"] == "failed":
        _error_line(console, str(result.get("error") or "the run failed"))
        if debug:
            failed = next((e for e in run_dir.events() if isinstance(e, ev.Failed)), None)
            if failed is not None and failed.detail:
                _notice(console, failed.detail.rstrip())
    elif result["status"] == "cancelled":
        _notice(console, f"cancelled; the run directory says where it stopped: {run_dir.path}")
    typer.echo(summary.to_json(result) if json_output else summary.one_line(result))


# --------------------------------------------------------------------- duogpt report


@app.command(epilog=EXIT_CODES_HELP)
def report(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN_DIR", help="A run directory.", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Where to write (default: RUN_DIR/report.md; '-' prints it on stdout).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing file other than the run's report.md.")
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Re-render a run's Markdown report from its events.jsonl (prints the path written)."""
    console = stderr_console()
    try:
        opened = RunDir.open(run_dir.expanduser())
        text = render_run_report(opened)
        if output is not None and str(output) == "-":
            typer.echo(text, nl=False)
            return
        target = output.expanduser() if output is not None else opened.report_path
        if _is_foreign_file(target, opened) and not overwrite:
            raise InputError(f"{target} already exists: pass --overwrite to replace it")
        written = opened.write_report(text, target, overwrite=True)
    except InputError as exc:
        input_error(console, exc, debug, json_output=False)
    if opened.status() == "running":
        _notice(console, "note: the run is still running; the report covers what it did so far")
    for warning in opened.notes:  # corrupt lines of events.jsonl, skipped
        _notice(console, f"warning: {warning}")
    typer.echo(str(written))


def render_run_report(run_dir: RunDir) -> str:
    """The report of a run directory, exactly as the runner renders it at the end of a run
    (plus a warning for each corrupt line of events.jsonl that was skipped)."""
    return report_mod.render_markdown(run_dir.view())


def _is_foreign_file(target: Path, run_dir: RunDir) -> bool:
    """True when ``target`` exists and is not the run's own report.md."""
    if not target.exists():
        return False
    return target.resolve() != run_dir.report_path.resolve()


# --------------------------------------------------------------------- duogpt eval


def evaluator() -> Callable[..., dict[str, Any]]:
    """``solver.run.evaluate.evaluate`` (imported on first use; tests replace this function)."""
    from solver.run.evaluate import evaluate

    return evaluate


@app.command("eval", epilog=EXIT_CODES_HELP)
@with_options(
    Surface.EVAL,
    inherited={
        "eval": f"a run directory's, else {DEFAULTS.eval}",
        "eval_windows": f"a run directory's, else {DEFAULTS.eval_windows}",
        "seqlen": f"a run directory's evaluation window, else {DEFAULTS.seqlen}",
        "eval_placement": f"a run directory's, else {DEFAULTS.eval_placement}",
        "act_sparsity": "a run directory's saved settings, else 0",
        "task_limit": "each task's own",
    },
)
def eval_command(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="TARGET", help="A model spec or a pruned run directory.", show_default=False
        ),
    ] = None,
    list_tasks: Annotated[
        bool,
        typer.Option("--list-tasks", help="List the zero-shot tasks, one per line, and exit."),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
    **values: Any,
) -> None:
    """Perplexity of a model, or of a pruned run directory (with its activation sparsity);
    with --tasks, its zero-shot accuracy instead.

    For a run directory the protocol defaults to the run's own (text, windows, their
    placement, and the window length its evaluation used), so
    `duogpt eval RUN_DIR` reproduces the run's pruned perplexity.
    """
    console = stderr_console()
    if list_tasks:
        from solver.run.tasks import list_lines

        typer.echo("\n".join(list_lines()))
        return
    display = RunDisplay(console)
    with command_errors(console, "evaluation", debug=debug, json_output=json_output):
        if target is None:
            raise InputError("missing TARGET: name a model or a run directory (or --list-tasks)")
        base = _run_config_or_defaults(target)
        text = base.eval if values["eval"] is None else values["eval"]
        windows = base.eval_windows if values["eval_windows"] is None else values["eval_windows"]
        tokens = base.eval_len if values["seqlen"] is None else values["seqlen"]
        placement = values["eval_placement"] or base.eval_placement
        act = values["act_sparsity"]
        limit = values["task_limit"]
        if windows < 1:
            raise InputError(f"--eval-windows must be an integer >= 1, got {windows}")
        if limit is not None and limit < 1:
            raise InputError(f"--limit must be an integer >= 1, got {limit}")
        OPTION["seqlen"].validate(tokens)
        OPTION["eval_placement"].validate(placement)
        OPTION["tasks"].validate(values["tasks"])
        if act is not None:
            OPTION["act_sparsity"].validate(act)
        task_names = _task_names(values["tasks"])
        if task_names:
            _notice(console, f"zero-shot tasks on {target}: {', '.join(task_names)}")

        def progress(done: int, total: int) -> None:
            display.show(ev.Progress(phase="eval", done=done, total=total, label=target))

        with display:
            result = evaluator()(
                target,
                eval_text=text,
                windows=windows,
                seqlen=tokens,
                act_sparsity=act,
                device=values["device"],
                progress=progress,
                placement=placement,
                calib_text=base.calib if base is not DEFAULTS else None,
                tasks=task_names,
                limit=limit or 0,
            )
    result = {"target": target, **result}
    if json_output:
        typer.echo(summary.to_json(result))
    elif "tasks" in result:
        typer.echo(_tasks_lines(result))
    else:
        typer.echo(_eval_line(result))


def _task_names(spec: str) -> list[str]:
    """The names of ``--tasks``, checked (an unknown one is bad input, before anything loads).

    Raises:
        InputError: an unknown task, or a hub task whose data is missing offline.
    """
    if not spec.strip():
        return []
    from solver.run.tasks import check_tasks, parse_tasks

    names = parse_tasks(spec)
    check_tasks(names)
    return names


def _tasks_lines(result: dict[str, Any]) -> str:
    """One line per task: its accuracy (± standard error), normalised accuracy and examples."""
    rows = []
    for name, row in result["tasks"].items():
        acc, err = row.get("acc"), row.get("acc_stderr")
        error = f" ± {err * 100:.1f}" if isinstance(err, float) else ""
        rows.append(
            f"{name}  acc {formatting.percent(acc)}{error}  "
            f"acc_norm {formatting.percent(row.get('acc_norm'))}  n {row.get('n')}"
        )
    model = result.get("model", result["target"])
    rows.append(f"{model}  X {formatting.percent(result.get('act_sparsity'))}")
    return "\n".join(rows)


def _run_config_or_defaults(target: str) -> RunConfig:
    """The run's configuration when ``target`` is a run directory, else the defaults.

    A run that skipped evaluation (``eval_windows`` 0) gets the default number of windows; a run
    recorded before ``--eval-placement`` existed evaluated its text's first windows.
    """
    path = Path(target).expanduser()
    if not (path / CONFIG_FILE).is_file():
        return DEFAULTS
    try:
        config = RunDir.open(path).config()
        recorded = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (InputError, OSError, ValueError):
        return DEFAULTS
    if isinstance(recorded, dict) and "eval_placement" not in recorded:
        config = config.replace(eval_placement="first")  # a run from before the option existed
    return config if config.eval_windows > 0 else config.replace(eval_windows=DEFAULTS.eval_windows)


def _eval_line(result: dict[str, Any]) -> str:
    """One line for an evaluation result."""
    protocol = result.get("protocol") or {}
    where = ", ".join(f"{key} {protocol[key]}" for key in sorted(protocol)) if protocol else ""
    ppl = result.get("ppl")
    ppl_text = formatting.number(ppl if isinstance(ppl, float) else None)
    parts = [f"ppl {ppl_text}", str(result.get("model", result["target"]))]
    parts.append(f"X {formatting.percent(result.get('act_sparsity'))}")
    if where:
        parts.append(f"({where})")
    return "  ".join(parts)


# --------------------------------------------------------------------- duogpt runs


@app.command(epilog=EXIT_CODES_HELP)
def runs(
    runs_dir: Annotated[Path, typer.Option(help="The runs folder.")] = RUNS_ROOT,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object {runs_dir, runs: [...]}.")
    ] = False,
) -> None:
    """List the runs under --runs-dir, newest first."""
    rows = list_runs(runs_dir.expanduser())
    for row in rows:  # corrupt lines of events.jsonl, skipped
        for warning in row.warnings:
            _notice(stderr_console(), f"warning: {row.path}: {warning}")
    if json_output:
        payload = {"runs_dir": str(runs_dir), "runs": [row.to_dict() for row in rows]}
        typer.echo(summary.to_json(payload))
        return
    if not rows:
        _notice(stderr_console(), f"no runs in {runs_dir}")
        return
    typer.echo(runs_table(rows))


def runs_table(rows: Sequence[Any]) -> str:
    """The runs list as aligned plain-text columns."""
    header = ("started", "status", "method", "model", "pattern", "W", "X", "ppl dense", "ppl")
    table = [(*header, "seconds", "run")]
    for row in rows:
        table.append(
            (
                row.started,
                row.status,
                row.method,
                row.model,
                row.pattern,
                formatting.percent(row.weight_sparsity),
                formatting.percent(row.act_sparsity),
                formatting.number(row.ppl_dense),
                formatting.number(row.ppl),
                formatting.number(row.seconds, 1),
                str(row.path),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


# --------------------------------------------------------------------- progress on stderr


# --------------------------------------------------------------------- errors and parsing


def _error_line(console: Console, message: str) -> None:
    """Print ``error: message`` on stderr."""
    _notice(console, f"error: {message}")


register_speed(app)  # `duogpt speed` (duogpt_tui/cli_speed.py)


def main() -> None:
    """Console-script entry point (``duogpt``)."""
    app()


if __name__ == "__main__":
    main()
