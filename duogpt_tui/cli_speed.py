"""``duogpt speed TARGET``: measured decode speed of a model or a pruned run (issue #13).

The measurements live in :mod:`solver.kernels.speed`; this module parses the options, prints
the per-layer-shape table and the decode line (stdout, or one JSON object with ``--json``) and
maps bad input to one ``error:`` line and exit 2. torch loads only when the command runs, so
``duogpt --help`` stays light.

When TARGET is a run directory, the measurement is recorded in it: one
:class:`~solver.events.DecodeSpeedMeasured` event appended to ``events.jsonl`` (under the run's
lock) and ``report.md`` rendered again, so the report ("Measured decode speed") and the compare
screen show it. Measuring again appends another event; they use the latest. A run that is still
running, or whose directory cannot be written, is refused before anything is measured (exit 2).
A model target records nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from duogpt_tui import formatting, summary
from duogpt_tui import report as report_mod
from duogpt_tui.cli_errors import command_errors
from duogpt_tui.exitcodes import EXIT_CODES_HELP
from duogpt_tui.progress import notice, stderr_console
from duogpt_tui.runstore import EVENTS_FILE, RunDir
from solver import events as ev
from solver.errors import InputError

MODE_TITLES = formatting.SPEED_MODES


def measurer() -> Callable[..., dict[str, Any]]:
    """``solver.kernels.speed.measure`` (imported on first use; tests may replace it)."""
    from solver.kernels.speed import measure

    return measure


def speed(
    target: Annotated[str, typer.Argument(help="A run directory or a model.")],
    tokens: Annotated[
        int, typer.Option("--tokens", help="Tokens to decode per measurement (>= 2).")
    ] = 32,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads (default: torch's).")
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device", help="cpu, cuda (Triton kernels in fp16) or auto (cuda when present)."
        ),
    ] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Measure batch-1 decode: per-layer-shape GEMV times against the byte bounds, and
    end-to-end tokens/s of the dense, activation-sparse and dual-sparse model.

    A run directory's measurement is recorded in it (events.jsonl and report.md, where the
    report and the compare screen show the latest one); a model's is not.
    """
    console = stderr_console()
    with command_errors(console, "speed measurement", debug=debug, json_output=json_output):
        if tokens < 2:
            raise InputError(f"--tokens must be an integer >= 2, got {tokens}")
        if threads is not None and threads < 1:
            raise InputError(f"--threads must be an integer >= 1, got {threads}")
        run_dir = run_target(target)
        if run_dir is not None:
            run_dir.check_recordable()  # before minutes of measuring
        result = measurer()(
            target,
            tokens=tokens,
            threads=threads,
            device=device,
            progress=lambda text: notice(console, text),
        )
        if run_dir is not None:
            record(run_dir, result, device)
    for line in result.get("notes", []):
        notice(console, f"note: {line}")
    if run_dir is not None:
        for line in run_dir.notes:
            notice(console, f"note: {line}")
        count = len(run_dir.view().speed_measurements)
        notice(
            console,
            f"recorded in {run_dir.path / EVENTS_FILE} and {run_dir.report_path} (measurement "
            f"{count} of this run; the report shows the latest)",
        )
    if json_output:
        typer.echo(summary.to_json(result))
    else:
        typer.echo(text_report(result))


def run_target(target: str) -> RunDir | None:
    """The run directory that ``target`` names (a folder with an ``events.jsonl``), or None
    for a model: a built-in name, a hub id, or a model folder (a run's ``model/`` included)."""
    path = Path(target).expanduser()
    if not (path / EVENTS_FILE).is_file():
        return None
    with contextlib.suppress(InputError):
        return RunDir.open(path)
    return None


def speed_event(
    result: dict[str, Any], *, t: float, date: str, device: str, host: dict[str, Any]
) -> ev.DecodeSpeedMeasured:
    """The event of one measurement (``measure``'s result dict, field by field).

    Args:
        result: what :func:`solver.kernels.speed.measure` returned.
        t: the run's latest time offset (the event adds no time to the run).
        date: when it was measured.
        device: the ``--device`` asked for (used when the result does not say which).
        host: a description of the machine.
    """
    names = {f.name for f in dataclasses.fields(ev.DecodeSpeedMeasured)}
    values = {name: result[name] for name in names - {"t", "date", "host"} if name in result}
    values.setdefault("device", device)
    values["notes"] = [str(line) for line in values.get("notes", [])]
    return ev.DecodeSpeedMeasured(t=t, date=date, host=host, **values)


def record(run_dir: RunDir, result: dict[str, Any], device: str) -> None:
    """Append the measurement to the run's events and render its ``report.md`` again.

    Raises:
        InputError: the run cannot be written (see :meth:`RunDir.record`).
    """
    event = speed_event(
        result,
        t=run_dir.view().elapsed,
        date=datetime.now().isoformat(timespec="seconds"),
        device=device,
        host=_host(str(result.get("device", "cpu"))),
    )
    run_dir.record(event)
    run_dir.write_report(report_mod.render_markdown(run_dir.view()))


def _host(device: str) -> dict[str, Any]:
    """The machine, as a run describes it (no torch thread count: the event has its own)."""
    try:
        import torch

        from solver.io import system

        host = dict(system.host(torch.device(device)))
    except Exception:  # a description must never lose a measurement
        return {}
    host.pop("torch_threads", None)
    return host


def text_report(result: dict[str, Any]) -> str:
    """The per-layer-shape table and the decode line, as plain text."""
    header = f"{'shape':>10} {'layers':>6}" + "".join(f" {title:>24}" for _, title in MODE_TITLES)
    lines = [
        f"backend {result['backend']}, {result['threads']} thread(s), activation sparsity "
        f"{formatting.percent(result['act_sparsity'])} ({result['act_rule']})",
        "per layer shape: us, x over dense [byte bound]",
        header,
    ]
    for row in result["layers"]:
        cells = "".join(f" {formatting.speed_cell(row, mode):>24}" for mode, _ in MODE_TITLES)
        lines.append(f"{row['shape']:>10} {row['layers']:>6}{cells}")
    lines.append(
        f"decode ({result['tokens']} tokens, KV cache, prefill excluded): dense "
        f"{result['dense_tokens_per_s']:.1f} tok/s, act-only {result['act_tokens_per_s']:.1f} "
        f"({result['speedup_act']:.2f}x), dual {result['dual_tokens_per_s']:.1f} "
        f"({result['speedup_dual']:.2f}x); same tokens as masked dense: "
        f"{'yes' if result['same_tokens'] else 'NO'}"
    )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add ``speed`` to the ``duogpt`` command group."""
    app.command("speed", epilog=EXIT_CODES_HELP)(speed)
