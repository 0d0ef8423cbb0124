"""``duogpt speed TARGET``: measured decode speed of a model or a pruned run (issue #13).

The measurements live in :mod:`solver.kernels.speed`; this module parses the options, prints
the per-layer-shape table and the decode line (stdout, or one JSON object with ``--json``) and
maps bad input to one ``error:`` line and exit 2. torch loads only when the command runs, so
``duogpt --help`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from duogpt_tui import formatting, summary
from duogpt_tui.cli_errors import command_errors
from duogpt_tui.exitcodes import EXIT_CODES_HELP
from duogpt_tui.progress import notice, stderr_console
from solver.errors import InputError

MODE_TITLES = (("dense", "dense"), ("act", "act-only"), ("weight", "weight-only"), ("dual", "dual"))


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
    end-to-end tokens/s of the dense, activation-sparse and dual-sparse model."""
    console = stderr_console()
    with command_errors(console, "speed measurement", debug=debug, json_output=json_output):
        if tokens < 2:
            raise InputError(f"--tokens must be an integer >= 2, got {tokens}")
        if threads is not None and threads < 1:
            raise InputError(f"--threads must be an integer >= 1, got {threads}")
        result = measurer()(
            target,
            tokens=tokens,
            threads=threads,
            device=device,
            progress=lambda text: notice(console, text),
        )
    for line in result.get("notes", []):
        notice(console, f"note: {line}")
    if json_output:
        typer.echo(summary.to_json(result))
    else:
        typer.echo(text_report(result))


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
        cells = "".join(
            f" {_cell(row[f'{mode}_us'], row[f'{mode}_x'], row[f'{mode}_bound']):>24}"
            for mode, _ in MODE_TITLES
        )
        lines.append(f"{row['shape']:>10} {row['layers']:>6}{cells}")
    lines.append(
        f"decode ({result['tokens']} tokens, KV cache, prefill excluded): dense "
        f"{result['dense_tokens_per_s']:.1f} tok/s, act-only {result['act_tokens_per_s']:.1f} "
        f"({result['speedup_act']:.2f}x), dual {result['dual_tokens_per_s']:.1f} "
        f"({result['speedup_dual']:.2f}x); same tokens as masked dense: "
        f"{'yes' if result['same_tokens'] else 'NO'}"
    )
    return "\n".join(lines)


def _cell(us: float, ratio: float, bound: float) -> str:
    return f"{us:.1f} {ratio:.2f}x [{bound:.2f}x]"


def register(app: typer.Typer) -> None:
    """Add ``speed`` to the ``duogpt`` command group."""
    app.command("speed", epilog=EXIT_CODES_HELP)(speed)
