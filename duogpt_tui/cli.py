"""``duogpt``: the headless command line (Typer) — prune, report, eval, runs.

stdout carries results only: a one-line summary, or with ``--json`` exactly one JSON object.
Progress and notices go to stderr (a progress bar with ETA on a terminal, plain periodic lines
otherwise). Exit codes: 0 done, 1 run failed, 2 bad input, 130 cancelled. Bad input is one
``error: ...`` line on stderr, never a traceback (``--debug`` shows it).

Heavy modules (torch, transformers, the solver's pipeline) load only when a command needs them,
so ``duogpt --help`` is instant.
"""

from __future__ import annotations

import math
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from duogpt_tui import report as report_mod
from duogpt_tui import runner, summary
from duogpt_tui.progress import RunDisplay, cancel_on_signals, stderr_console
from duogpt_tui.progress import notice as _notice
from duogpt_tui.runstore import RUNS_ROOT, RunDir, list_runs
from solver import events as ev
from solver.config import ACT_RULES, DEVICES, DTYPES, METHODS, RESIDUAL_VARIANTS, RunConfig
from solver.errors import InputError

DEFAULTS = RunConfig()
"""The run defaults: every option's default comes from here, never from a copy."""

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_CANCELLED = 0, 1, 2, 130

EXIT_CODES_HELP = (
    "Exit codes: 0 done, 1 the run failed, 2 bad input (nothing was run), "
    "130 cancelled (Ctrl-C or SIGTERM; the run directory says where it stopped)."
)


class OneLineErrorGroup(TyperGroup):
    """The command group: usage errors and unexpected errors become one ``error:`` line."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        """Run the CLI like Click's ``main``, printing every error as one line on stderr."""
        standalone = kwargs.pop("standalone_mode", True)
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone:
            return super().main(argv, *rest, standalone_mode=False, **kwargs)
        try:
            code = super().main(argv, *rest, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(EXIT_CANCELLED)
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `duogpt`: the help text
                exc.show()  # type: ignore[attr-defined]
                sys.exit(EXIT_INPUT)
            if _is_usage_error(exc):
                typer.echo(f"error: {_usage_message(exc)}", err=True)
                sys.exit(int(getattr(exc, "exit_code", EXIT_INPUT)))
            if "--debug" in argv:  # a bug: one line, the traceback only with --debug
                raise
            typer.echo(
                f"error: internal error ({type(exc).__name__}: {_first_line(exc)}); "
                "rerun with --debug for the traceback",
                err=True,
            )
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _is_usage_error(exc: BaseException) -> bool:
    """True for Click's own errors (bad usage, bad parameter), which Typer vendors.

    Typer ships its own copy of Click, so the classes are recognised by their interface
    (``format_message`` and an integer ``exit_code``) rather than imported.
    """
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


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
        raise typer.Exit(EXIT_OK)


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


RESUME_OPTIONS = frozenset({"device", "keep_checkpoints", "json_output", "debug", "resume"})
"""The options that may go with ``--resume`` (the run's own config.json gives the rest)."""


@app.command(epilog=EXIT_CODES_HELP)
def prune(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option(help="Built-in name, local HF model folder, .gguf file or hub id.")
    ] = DEFAULTS.model,
    calib: Annotated[
        str, typer.Option(help="Calibration text: built-in, .txt/.jsonl file, wikitext2 or c4.")
    ] = DEFAULTS.calib,
    eval_text: Annotated[
        str, typer.Option("--eval", help="Evaluation text (same forms as --calib).")
    ] = DEFAULTS.eval,
    method: Annotated[
        str, typer.Option(help=f"Pruning method: {', '.join(METHODS)}.")
    ] = DEFAULTS.method,
    weight_sparsity: Annotated[
        str, typer.Option(metavar="FLOAT", help="Target fraction of zero weights, in [0, 1).")
    ] = str(DEFAULTS.weight_sparsity),
    pattern: Annotated[
        str, typer.Option(help="'unstructured' or N:M (N zeros in every M weights), e.g. 2:4.")
    ] = DEFAULTS.pattern,
    act_sparsity: Annotated[
        str,
        typer.Option(metavar="FLOAT", help="Fraction of each layer's input zeroed; 0 disables."),
    ] = str(DEFAULTS.act_sparsity),
    nsamples: Annotated[str, typer.Option(metavar="INT", help="Calibration sequences.")] = str(
        DEFAULTS.nsamples
    ),
    seqlen: Annotated[
        str, typer.Option(metavar="INT", help="Tokens per calibration sequence and eval window.")
    ] = str(DEFAULTS.seqlen),
    eval_windows: Annotated[
        str, typer.Option(metavar="INT", help="Evaluation windows of seqlen tokens; 0 skips.")
    ] = str(DEFAULTS.eval_windows),
    eval_seqlen: Annotated[
        str,
        typer.Option(metavar="INT", help="Tokens per evaluation window; 0 means --seqlen."),
    ] = str(DEFAULTS.eval_seqlen),
    seed: Annotated[str, typer.Option(metavar="INT", help="Random seed.")] = str(DEFAULTS.seed),
    device: Annotated[
        str, typer.Option(help=f"Device: {', '.join(DEVICES)} (auto uses CUDA when present).")
    ] = DEFAULTS.device,
    dtype: Annotated[
        str,
        typer.Option(help=f"Model dtype: {', '.join(DTYPES)} (the solver's math is float32)."),
    ] = DEFAULTS.dtype,
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
    alpha: Annotated[
        str,
        typer.Option(metavar="FLOAT", help="DuoGPT residual scale; 0 = sparse-input SparseGPT."),
    ] = str(DEFAULTS.alpha),
    alpha_select: Annotated[
        str,
        typer.Option(
            help="DuoGPT alpha per layer: fixed (--alpha everywhere) or heldout (the best of 0, "
            "alpha/2 and alpha on held-out calibration sequences)."
        ),
    ] = DEFAULTS.alpha_select,
    damping: Annotated[str, typer.Option(metavar="FLOAT", help="Relative Hessian damping.")] = str(
        DEFAULTS.damping
    ),
    damping_rule: Annotated[
        str,
        typer.Option(help="What --damping is relative to: mean, median or channel of diag(H)."),
    ] = DEFAULTS.damping_rule,
    mask_scope: Annotated[
        str,
        typer.Option(help="OBS masks compare scores in each column block or each row: block, row."),
    ] = DEFAULTS.mask_scope,
    residual_damping: Annotated[
        str,
        typer.Option(
            metavar="FLOAT",
            help="Relative damping of DuoGPT's residual terms (a ridge); 0 = --damping.",
        ),
    ] = str(DEFAULTS.residual_damping),
    token_clip: Annotated[
        str,
        typer.Option(
            metavar="FLOAT",
            help="Cap each calibration token's norm at this many times the median; 0 = off.",
        ),
    ] = str(DEFAULTS.token_clip),
    block_size: Annotated[
        str, typer.Option(metavar="INT", help="Columns per lazy-update block.")
    ] = str(DEFAULTS.block_size),
    act_rule: Annotated[
        str, typer.Option(help=f"Activation sparsity rule: {', '.join(ACT_RULES)}.")
    ] = DEFAULTS.act_rule,
    act_order: Annotated[
        bool,
        typer.Option(
            "--act-order/--no-act-order", help="Process columns by descending Hessian diagonal."
        ),
    ] = DEFAULTS.act_order,
    residual_variant: Annotated[
        str, typer.Option(help=f"Lazy residual update: {', '.join(RESIDUAL_VARIANTS)}.")
    ] = DEFAULTS.residual_variant,
    true_sequential: Annotated[
        bool,
        typer.Option(
            "--true-sequential/--all-at-once",
            help="Prune [qkv] -> [o] -> [gate, up] -> [down] in order, or a block at once.",
        ),
    ] = DEFAULTS.true_sequential,
    batch_size: Annotated[
        str, typer.Option(metavar="INT", help="Sequences per forward pass.")
    ] = str(DEFAULTS.batch_size),
    proxy_every: Annotated[
        str, typer.Option(metavar="INT", help="Proxy perplexity every N blocks; 0 = off.")
    ] = str(DEFAULTS.proxy_every),
    proxy_windows: Annotated[
        str, typer.Option(metavar="INT", help="Windows for the proxy perplexity.")
    ] = str(DEFAULTS.proxy_windows),
    save_model: Annotated[
        bool,
        typer.Option(
            "--save-model/--no-save-model", help="Save the pruned model into the run directory."
        ),
    ] = DEFAULTS.save_model,
    eval_dense: Annotated[
        bool,
        typer.Option(
            "--eval-dense/--no-eval-dense",
            help="Also measure the dense model (with and without activation sparsity).",
        ),
    ] = DEFAULTS.eval_dense,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the run that --out already holds.")
    ] = False,
    checkpoints: Annotated[
        bool,
        typer.Option(
            "--checkpoints/--no-checkpoints",
            help="Checkpoint after every block, so that --resume can continue the run.",
        ),
    ] = DEFAULTS.checkpoints,
    keep_checkpoints: Annotated[
        bool,
        typer.Option("--keep-checkpoints", help="Keep the checkpoints once the run finished."),
    ] = DEFAULTS.keep_checkpoints,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="RUN_DIR",
            help="Continue a stopped run from its last complete block, with its own settings "
            "(only --device and --keep-checkpoints may change).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Prune a model with DuoGPT (or a baseline), evaluate it, and write a run directory.

    The defaults (SmolLM2-135M, 16 x 256 calibration tokens of State of the Union addresses,
    16 x 256 evaluation tokens of Moby-Dick) finish in a few minutes on a 2-core CPU, offline.
    The run directory holds config.json, events.jsonl, report.md and the pruned model (model/).
    A run that was stopped (Ctrl-C, kill, crash) continues with --resume RUN_DIR.
    """
    console = stderr_console()
    if resume is not None:
        _resume(ctx, console, resume.expanduser(), device, keep_checkpoints, json_output, debug)
    try:
        config = build_config(
            model=model,
            calib=calib,
            eval=eval_text,
            method=method,
            weight_sparsity=_parse_float("--weight-sparsity", weight_sparsity),
            pattern=pattern,
            act_sparsity=_parse_float("--act-sparsity", act_sparsity),
            act_rule=act_rule,
            nsamples=_parse_int("--nsamples", nsamples),
            seqlen=_parse_int("--seqlen", seqlen),
            eval_windows=_parse_int("--eval-windows", eval_windows),
            eval_seqlen=_parse_int("--eval-seqlen", eval_seqlen),
            seed=_parse_int("--seed", seed),
            device=device,
            alpha=_parse_float("--alpha", alpha),
            alpha_select=alpha_select,
            damping=_parse_float("--damping", damping),
            damping_rule=damping_rule,
            mask_scope=mask_scope,
            residual_damping=_parse_float("--residual-damping", residual_damping),
            token_clip=_parse_float("--token-clip", token_clip),
            block_size=_parse_int("--block-size", block_size),
            act_order=act_order,
            residual_variant=residual_variant,
            true_sequential=true_sequential,
            batch_size=_parse_int("--batch-size", batch_size),
            proxy_every=_parse_int("--proxy-every", proxy_every),
            proxy_windows=_parse_int("--proxy-windows", proxy_windows),
            save_model=save_model,
            eval_dense=eval_dense,
            dtype=dtype,
            checkpoints=checkpoints,
            keep_checkpoints=keep_checkpoints,
        )
        runner.preflight(config)
        run_dir = RunDir.create(
            config,
            out=out.expanduser() if out is not None else None,
            runs_root=runs_dir.expanduser(),
            overwrite=overwrite,
        )
    except InputError as exc:
        _input_error(console, exc, debug, json_output)
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
    device: str,
    keep_checkpoints: bool,
    json_output: bool,
    debug: bool,
) -> NoReturn:
    """``duogpt prune --resume RUN_DIR``: continue a stopped run with its own configuration.

    Options that define the run are refused (exit 2): a resumed run must give the same result
    as an uninterrupted one. ``--device`` and ``--keep-checkpoints`` may change.
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
        if _given(ctx, "device"):
            changes["device"] = device
        if keep_checkpoints:
            changes["keep_checkpoints"] = True
        config = config.replace(**changes).validate()
        runner.preflight(config)
        run_dir = RunDir.resume(path)
        if changes:
            run_dir.write_config(config)
    except InputError as exc:
        _input_error(console, exc, debug, json_output)
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
    """Print the pre-flight estimate line, and a warning when the machine looks too small."""
    from solver.io import system
    from solver.run import estimate

    try:
        device = system.resolve_device(config.device)
    except InputError:
        return
    guess = estimate.estimate(config, device=device.type)
    if guess.seconds <= 0:
        _notice(console, f"pre-flight: no estimate ({guess.detail})")
        return
    _notice(
        console,
        f"pre-flight: about {estimate.megabytes(guess.memory_mb)} of memory and "
        f"{_duration(guess.seconds)} on {device} ({guess.detail})",
    )
    available = system.available_memory_mb(device)
    if available is not None and guess.memory_mb > available:
        elsewhere = "--device cpu" if device.type == "cuda" else "a machine with more memory"
        _notice(
            console,
            f"warning: this run needs about {estimate.megabytes(guess.memory_mb)} but only "
            f"{estimate.megabytes(available)} is available on {device}: use fewer --nsamples, "
            f"a shorter --seqlen, a smaller --batch-size, or {elsewhere}",
        )
    thin = estimate.thin_calibration_for(config)
    if thin:
        _notice(console, f"warning: {thin}")


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
        events = runner.execute(config, run_dir, cancel, resume=resume)
        try:
            for event in events:
                display.show(event)
        except KeyboardInterrupt:
            display.line("stopped at once (second interrupt)")
        finally:
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
        _input_error(console, exc, debug, json_output=False)
    if opened.status() == "running":
        _notice(console, "note: the run is still running; the report covers what it did so far")
    typer.echo(str(written))


def render_run_report(run_dir: RunDir) -> str:
    """The report of a run directory, exactly as the runner renders it at the end of a run."""
    try:
        config: dict[str, Any] | None = run_dir.config().to_dict()
    except InputError:
        config = None
    return report_mod.render_markdown(run_dir.events(), config=config)


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
def eval_command(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET", help="A model spec or a pruned run directory.", show_default=False
        ),
    ],
    eval_text: Annotated[
        str | None,
        typer.Option(
            "--eval",
            help="Evaluation text (built-in, file, wikitext2, c4).",
            show_default=f"a run directory's, else {DEFAULTS.eval}",
        ),
    ] = None,
    eval_windows: Annotated[
        str | None,
        typer.Option(
            metavar="INT",
            help="Non-overlapping windows of seqlen tokens.",
            show_default=f"a run directory's, else {DEFAULTS.eval_windows}",
        ),
    ] = None,
    seqlen: Annotated[
        str | None,
        typer.Option(
            metavar="INT",
            help="Tokens per window.",
            show_default=f"a run directory's, else {DEFAULTS.seqlen}",
        ),
    ] = None,
    act_sparsity: Annotated[
        str | None,
        typer.Option(
            metavar="FLOAT",
            help="Activation sparsity (top-k) applied during evaluation.",
            show_default="a run directory's saved settings, else 0",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="Device: auto, cpu or cuda.")] = DEFAULTS.device,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Perplexity of a model, or of a pruned run directory (with its activation sparsity).

    For a run directory the protocol defaults to the run's own (text, windows, seqlen), so
    `duogpt eval RUN_DIR` reproduces the run's pruned perplexity.
    """
    console = stderr_console()
    display = RunDisplay(console)
    try:
        base = _run_config_or_defaults(target)
        text = eval_text if eval_text is not None else base.eval
        windows = (
            _parse_int("--eval-windows", eval_windows)
            if eval_windows is not None
            else base.eval_windows
        )
        tokens = _parse_int("--seqlen", seqlen) if seqlen is not None else base.seqlen
        act = _parse_float("--act-sparsity", act_sparsity) if act_sparsity is not None else None
        if windows < 1:
            raise InputError(f"--eval-windows must be an integer >= 1, got {windows}")
        if tokens < 8:
            raise InputError(f"--seqlen must be an integer >= 8, got {tokens}")

        def progress(done: int, total: int) -> None:
            display.show(ev.Progress(phase="eval", done=done, total=total, label=target))

        with display:
            result = evaluator()(
                target,
                eval_text=text,
                windows=windows,
                seqlen=tokens,
                act_sparsity=act,
                device=device,
                progress=progress,
            )
    except InputError as exc:
        _input_error(console, exc, debug, json_output)
    except KeyboardInterrupt:
        _error_line(console, "cancelled")
        raise typer.Exit(EXIT_CANCELLED) from None
    except Exception as exc:
        if debug:
            _notice(console, traceback.format_exc().rstrip())
        _error_line(console, f"evaluation failed: {type(exc).__name__}: {_first_line(exc)}")
        raise typer.Exit(EXIT_FAILED) from None
    result = {"target": target, **result}
    typer.echo(summary.to_json(result) if json_output else _eval_line(result))


def _run_config_or_defaults(target: str) -> RunConfig:
    """The run's configuration when ``target`` is a run directory, else the defaults.

    A run that skipped evaluation (``eval_windows`` 0) gets the default number of windows.
    """
    path = Path(target).expanduser()
    if not (path / "config.json").is_file():
        return DEFAULTS
    try:
        config = RunDir.open(path).config()
    except InputError:
        return DEFAULTS
    return config if config.eval_windows > 0 else config.replace(eval_windows=DEFAULTS.eval_windows)


def _eval_line(result: dict[str, Any]) -> str:
    """One line for an evaluation result."""
    protocol = result.get("protocol") or {}
    where = ", ".join(f"{key} {protocol[key]}" for key in sorted(protocol)) if protocol else ""
    ppl = result.get("ppl")
    ppl_text = summary.number(ppl if isinstance(ppl, float) else None)
    parts = [f"ppl {ppl_text}", str(result.get("model", result["target"]))]
    parts.append(f"X {summary.percent(result.get('act_sparsity'))}")
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
                summary.percent(row.weight_sparsity),
                summary.percent(row.act_sparsity),
                summary.number(row.ppl_dense),
                summary.number(row.ppl),
                "-" if row.seconds is None else f"{row.seconds:.1f}",
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


def _parse_float(flag: str, text: str) -> float:
    """A float option's value.

    Raises:
        InputError: the text is not a number.
    """
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{flag} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{flag} must be a finite number, got {text!r}")
    return value


def _parse_int(flag: str, text: str) -> int:
    """An integer option's value.

    Raises:
        InputError: the text is not an integer.
    """
    try:
        return int(str(text).strip())
    except ValueError:
        raise InputError(f"{flag} must be an integer, got {text!r}") from None


def _input_error(console: Console, exc: InputError, debug: bool, json_output: bool) -> NoReturn:
    """Report bad input (one line; the traceback with --debug) and exit with code 2."""
    if debug:
        _notice(console, "".join(traceback.format_exception(exc)).rstrip())
    _error_line(console, _first_line(exc))
    if json_output:
        typer.echo(summary.to_json(summary.input_error_result(_first_line(exc))))
    raise typer.Exit(EXIT_INPUT)


def _error_line(console: Console, message: str) -> None:
    """Print ``error: message`` on stderr."""
    _notice(console, f"error: {message}")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _usage_message(exc: BaseException) -> str:
    """A Click usage error as one line, with where to find help."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    command_path = getattr(ctx, "command_path", None)
    if command_path:
        message += f" (see '{command_path} --help')"
    return message


def main() -> None:
    """Console-script entry point (``duogpt``)."""
    app()


if __name__ == "__main__":
    main()
