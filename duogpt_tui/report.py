"""The Markdown report of a run, rendered from its events alone.

:func:`render_markdown` is pure and deterministic: every figure comes from the events (and the
run's configuration), nothing reads a clock or the machine, dictionaries are written in a fixed
order, and numbers use fixed formats. The same events always give a byte-identical report, so a
report can be re-rendered from any run directory (``duogpt report``) and checked against a golden
file. :func:`render_comparison` puts the headline figures of several runs side by side.

Both read runs through :class:`~duogpt_tui.runview.RunView` (the one fold of the event stream)
and write numbers with :mod:`duogpt_tui.formatting`; a run read from a damaged ``events.jsonl``
lists what was skipped among its notes and warnings.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

from duogpt_tui import formatting as fmt
from duogpt_tui.runview import RunView
from duogpt_tui.textplot import bar_chart, line_plot
from solver import events as ev
from solver.config import RunConfig
from solver.math import speedup

NA = "n/a"
"""What a cell shows when the figure was not measured."""

CONFIG_ORDER = tuple(f.name for f in dataclasses.fields(RunConfig))
"""Configuration options in the order RunConfig declares them."""

TIMING_ORDER = ("load", "calibrate", "forward", "statistics", "solve", "eval")
"""Timing parts listed first, in this order; other parts follow alphabetically."""

PPL_LABELS = {
    "dense": "dense",
    "dense_act": "dense + activation sparsity",
    "pruned": "pruned",
}
"""Headline rows of the perplexity table, by event label."""

LAYER_TYPE_ORDER = ("q", "k", "v", "o", "gate", "up", "down")

SHORT_MODE_NAMES = {"weight": "W-sparse", "act": "X-sparse", "dual": "dual (spMspV)"}
"""Column names of the decode-bound tables, narrow enough for an 80-column terminal."""
"""Layer types in a LLaMA block's execution order (others follow alphabetically)."""


# --------------------------------------------------------------------- public API


def render_markdown(
    events: Sequence[ev.Event] | RunView, config: dict[str, Any] | None = None
) -> str:
    """Render the report of one run.

    Args:
        events: the run's events in order (a partial list renders as an incomplete run), or
            its view (``RunDir.view()``, which carries the warnings of reading it).
        config: the run's configuration (``RunConfig.to_dict()``); used only when the events
            carry none (a run that failed before it started), and not with a view.

    Returns:
        Markdown text ending with one newline.
    """
    view = _view(events, config)
    parts = [
        _title(view),
        _status(view),
        _headline(view),
        _accuracy(view),
        _what_was_run(view),
        _configuration(view.config),
        _per_block(view),
        _per_layer(view),
        _alpha_choice(view),
        _error_plot(view),
        _density_plot(view),
        _decode_speedup(view),
        _measured_speed(view),
        _proxy(view),
        _notes(view),
        _failure_detail(view),
    ]
    return "\n\n".join(part for part in parts if part).rstrip("\n") + "\n"


def render_comparison(runs: Sequence[tuple[str, Sequence[ev.Event] | RunView]]) -> str:
    """Render the headline figures of several runs side by side.

    Args:
        runs: (name, events or view) per run, in the order to show them.

    Returns:
        Markdown text ending with one newline.
    """
    lines = ["# DuoGPT run comparison", ""]
    if not runs:
        return "\n".join([*lines, "No runs to compare."]) + "\n"
    views = [(name, _view(events)) for name, events in runs]
    header = (
        "run",
        "status",
        "model",
        "method",
        "pattern",
        "weight sparsity",
        "act. sparsity",
        "ppl dense",
        "ppl dense + act.",
        "ppl pruned",
        "x dense",
        "time",
        "peak memory",
    )
    rows = [_comparison_row(name, view) for name, view in views]
    lines += _table(header, rows, align="lllllrrrrrrrr")
    protocols = {name: _protocol_text(view) for name, view in views if view.perplexities}
    if len(set(protocols.values())) > 1:
        lines += ["", "Perplexities were measured with different protocols; compare with care:", ""]
        lines += [f"- {_cell(name)}: {text}" for name, text in protocols.items()]
    elif protocols:
        lines += ["", f"Perplexity protocol: {next(iter(protocols.values()))}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- sections


def _view(events: Sequence[ev.Event] | RunView, config: dict[str, Any] | None = None) -> RunView:
    """The view of a run given as events (with its configuration) or as a view already."""
    return events if isinstance(events, RunView) else RunView.of(events, config)


def _title(view: RunView) -> str:
    """The title and a one-line description of the run."""
    model = view.model or str(view.config.get("model", "")) or "unknown model"
    method = view.method or "unknown method"
    lines = [f"# DuoGPT run report: {model}", ""]
    target_w = view.target_weight_sparsity
    pattern = view.pattern or "unstructured"
    target_x = view.target_act_sparsity
    rule = str(view.config.get("act_rule", ""))
    description = f"Method **{method}**"
    if target_w is not None:
        description += f", weight sparsity {_pct(target_w)} ({pattern})"
    if target_x is not None:
        off = " (off)" if target_x == 0 else f" ({rule})" if rule else ""
        description += f", activation sparsity {_pct(target_x)}{off}"
    lines.append(description + ".")
    return "\n".join(lines)


def _status(view: RunView) -> str:
    """One line that says how the run ended."""
    terminal = view.terminal
    of_blocks = f" of {view.n_blocks}" if view.n_blocks else ""
    if isinstance(terminal, ev.Finished):
        return f"**Status: finished** in {_seconds(terminal.seconds)}."
    if isinstance(terminal, ev.Cancelled):
        done = {e.block for e in view.blocks}
        where = f"at block {terminal.block}{of_blocks}" if terminal.block >= 0 else "before pruning"
        if terminal.block in done:  # stopped between blocks or in the final evaluation
            where = f"once block {terminal.block}{of_blocks} was pruned"
        return (
            f"**Status: cancelled** {where} ({terminal.reason}) after "
            f"{_seconds(terminal.t)}; {view.blocks_done} block(s) were pruned. "
            "The figures below cover what was done before it stopped."
        )
    if isinstance(terminal, ev.Failed):
        where = f"at block {terminal.block}{of_blocks}" if terminal.block >= 0 else "before pruning"
        kind = "bad input" if terminal.category == "input" else "run error"
        return f"**Status: failed** {where} ({kind}): {terminal.error}"
    return (
        "**Status: incomplete**: there is no final event, so the run is still running or was "
        f"interrupted (killed); {view.blocks_done} block(s) were pruned."
    )


def _headline(view: RunView) -> str:
    """The perplexity table and the run's headline figures."""
    lines = ["## Headline", ""]
    measured = _headline_perplexities(view)
    dense = view.ppl_dense
    method = view.method
    rows = []
    for label, event in measured:
        name = PPL_LABELS[label] + (f" ({method})" if label == "pruned" and method else "")
        ratio = f"{event.ppl / dense:.2f}x" if dense and _finite(event.ppl) else NA
        rows.append((name, _ppl(event.ppl), ratio, _pct(event.act_sparsity)))
    if rows:
        lines += _table(
            ("model", "perplexity", "x dense", "act. sparsity at evaluation"), rows, align="lrrr"
        )
    else:
        lines.append("No perplexity was measured.")
    lines += [""]
    lines += _table(
        (
            "target weight sparsity",
            "achieved weight sparsity",
            "target act. sparsity",
            "measured act. sparsity",
            "time",
            "peak memory",
            "blocks pruned",
        ),
        [
            (
                _pct(view.target_weight_sparsity),
                _pct(view.weight_sparsity),
                _pct(view.target_act_sparsity),
                _pct(view.act_sparsity),
                _seconds(view.seconds),
                _megabytes(view.peak_memory_mb),
                _blocks_done(view),
            )
        ],
        align="rrrrrrr",
    )
    lines += ["", f"Perplexity protocol: {_protocol_text(view)}."]
    lines.append(
        "Measured activation sparsity is the fraction of zeroed layer inputs during the final "
        "evaluation (over the calibration data when no evaluation ran)."
    )
    timings = _final_timings(view)
    if timings:
        lines.append(f"Time by part: {timings}.")
    return "\n".join(lines)


def _accuracy(view: RunView) -> str:
    """The zero-shot task accuracies of the dense and the pruned model (``--tasks``)."""
    dense, pruned = view.tasks("dense"), view.tasks("pruned")
    if dense is None and pruned is None:
        return ""
    names: list[str] = []
    for measured in (dense, pruned):
        names += [name for name in (measured.tasks if measured else {}) if name not in names]
    rows = []
    for name in names:
        low = dense.tasks.get(name, {}) if dense else {}
        high = pruned.tasks.get(name, {}) if pruned else {}
        change = NA
        if _finite(low.get("acc")) and _finite(high.get("acc")):
            change = f"{(high['acc'] - low['acc']) * 100:+.1f} pt"
        rows.append(
            (
                f"`{_cell(name)}`",
                _acc(low),
                _acc(high),
                change,
                _pct(low.get("acc_norm")),
                _pct(high.get("acc_norm")),
                str(high.get("n") or low.get("n") or NA),
            )
        )
    header = (
        "task",
        "dense acc",
        "pruned acc",
        "change",
        "dense acc_norm",
        "pruned acc_norm",
        "examples",
    )
    lines = ["## Zero-shot accuracy", ""]
    lines += _table(header, rows, align="lrrrrrr")
    shown = pruned if pruned is not None else dense
    limit = shown.limit if shown is not None else 0
    per_task = f"{limit} examples per task" if limit else "each task's default number of examples"
    act = (
        f", the pruned model with {_pct(pruned.act_sparsity)} activation sparsity" if pruned else ""
    )
    lines += [
        "",
        f"Zero-shot through lm-evaluation-harness (± one standard error, in points); {per_task}"
        f"{act}. acc_norm normalises each choice's log-likelihood by its length in bytes.",
    ]
    return "\n".join(lines)


def _acc(row: dict[str, Any]) -> str:
    """``61.0% ± 4.9`` (the standard error in points), or n/a."""
    acc, err = row.get("acc"), row.get("acc_stderr")
    if acc is None or not _finite(acc):
        return NA
    return _pct(acc) + (f" ± {err * 100:.1f}" if err is not None and _finite(err) else "")


def _what_was_run(view: RunView) -> str:
    """Model, data, protocol, device, host and versions."""
    started, config = view.started, view.config
    lines = ["## What was run", ""]
    if started is None:
        model = config.get("model", NA)
        lines.append(f"- Model: `{model}` (the run stopped before the model was loaded)")
    else:
        lines.append(
            f"- Model: `{started.model}` (family {started.family or NA}, dtype {started.dtype}, "
            f"{started.n_blocks} decoder blocks, {started.n_layers} prunable linear layers, "
            f"{fmt.count(started.n_params)} parameters of which "
            f"{fmt.count(started.n_prunable_params)} prunable)"
        )
        if view.layout:
            lines.append(f"- Layout found by discovery: {_one_line(view.layout)}")
    if config:
        lines.append(
            f"- Method: `{config.get('method', NA)}`, pattern `{config.get('pattern', NA)}`, "
            f"activation rule `{config.get('act_rule', NA)}`"
        )
    calib = dict(started.calib) if started and started.calib else {}
    eval_protocol = calib.pop("eval", None)
    calib_text = _pairs(calib) if calib else _calib_from_config(config)
    lines.append(f"- Calibration data: {calib_text}")
    eval_text = _protocol_text(view, config)
    protocol = _measured_protocol(view) or (
        eval_protocol if isinstance(eval_protocol, dict) else {}
    )
    shown = {k: v for k, v in protocol.items() if k != "token_spans"}
    if shown:
        eval_text += f" ({_pairs(shown)})"
    lines.append(f"- Evaluation: {eval_text}")
    spans = protocol.get("token_spans")
    if isinstance(spans, list) and spans:
        where = ", ".join(f"[{span[0]}, {span[1]})" for span in spans)
        lines.append(f"- Evaluation windows (token offsets in the held-out text): {where}")
    if started is not None:
        lines.append(f"- Device: `{started.device}`")
        if started.host:
            lines.append(f"- Host: {_pairs(started.host)}")
        if started.versions:
            lines.append(f"- Versions: {_pairs(started.versions)}")
    return "\n".join(lines)


def _configuration(config: dict[str, Any]) -> str:
    """The whole configuration, one option per row."""
    if not config:
        return ""
    keys = [k for k in CONFIG_ORDER if k in config]
    keys += sorted(k for k in config if k not in CONFIG_ORDER)
    rows = [(f"`{key}`", _config_value(config[key])) for key in keys]
    return "\n".join(["### Configuration", "", *_table(("option", "value"), rows, align="ll")])


def _per_block(view: RunView) -> str:
    """One row per pruned block."""
    blocks = view.blocks
    if not blocks:
        return ""
    parts = _ordered_keys(key for block in blocks for key in block.timings)
    header = (
        "block",
        "seconds",
        "weight sparsity",
        "act. sparsity",
        "peak memory",
        *(f"{part} s" for part in parts),
    )
    rows = [
        (
            str(b.block),
            fmt.number(b.seconds),
            _pct(b.weight_sparsity),
            _pct(b.act_sparsity),
            _megabytes(b.peak_memory_mb),
            *(fmt.number(b.timings[p]) if p in b.timings else NA for p in parts),
        )
        for b in blocks
    ]
    return "\n".join(["## Per block", "", *_table(header, rows, align="r" * len(header))])


def _per_layer(view: RunView) -> str:
    """One row per pruned linear layer."""
    layers = view.layers
    if not layers:
        return ""
    header = (
        "block",
        "layer",
        "shape",
        "error before",
        "error after",
        "weight sparsity",
        "act. sparsity",
        "seconds",
        "damping",
        "retries",
    )
    rows = [
        (
            str(layer.block),
            f"`{layer.name}`",
            "x".join(str(n) for n in layer.shape) or NA,
            fmt.scientific(layer.error_before),
            fmt.scientific(layer.error_after),
            _pct(layer.weight_sparsity),
            _pct(layer.act_sparsity),
            fmt.number(layer.seconds),
            fmt.general(layer.damping),
            str(layer.retries),
        )
        for layer in layers
    ]
    lines = ["## Per layer", ""]
    lines.append(
        "Reconstruction error is the layer objective ||W'X^ - WX~||^2 / ||WX~||^2, before and "
        "after the solve."
    )
    lines += ["", *_table(header, rows, align="rlrrrrrrrr")]
    return "\n".join(lines)


def _alpha_choice(view: RunView) -> str:
    """DuoGPT's alpha per layer, and why, when it was chosen on held-out calibration data."""
    layers = [e for e in view.layers if e.heldout]
    if not layers:
        return ""
    chosen: dict[str, int] = {}
    for layer in layers:
        chosen[fmt.general(layer.alpha)] = chosen.get(fmt.general(layer.alpha), 0) + 1
    counts = ", ".join(f"alpha {a} in {n} layers" for a, n in sorted(chosen.items()))
    candidates = sorted(layers[0].heldout, key=float)
    header = ("block", "layer", *(f"held-out error, alpha {a}" for a in candidates), "alpha used")
    rows = [
        (
            str(layer.block),
            f"`{layer.name}`",
            *(fmt.scientific(layer.heldout[a]) if a in layer.heldout else NA for a in candidates),
            fmt.general(layer.alpha),
        )
        for layer in layers
    ]
    lines = ["## Residual scale per layer", ""]
    lines.append(
        "Each layer was solved on the fit calibration sequences with every candidate alpha and "
        "scored by the layer objective on the held-out ones (every 4th sequence); the lowest "
        f"won, and the final solve used every sequence. Chosen: {counts}."
    )
    lines += ["", *_table(header, rows, align="rl" + "r" * (len(candidates) + 1))]
    return "\n".join(lines)


def _error_plot(view: RunView) -> str:
    """A log-scale text plot of reconstruction error per layer, in solve order."""
    layers = view.layers
    if not layers:
        return ""
    plot = line_plot(
        {
            "before": [layer.error_before for layer in layers],
            "after": [layer.error_after for layer in layers],
        },
        width=72,
        height=12,
        log_y=True,
        title="reconstruction error per layer (x: layer, in solve order)",
    )
    return "\n".join(["## Reconstruction error per layer", "", "```text", plot, "```"])


def _density_plot(view: RunView) -> str:
    """The per-row weight-density histogram, summed over all layers."""
    layers = [e for e in view.layers if e.histogram]
    if not layers:
        return ""
    edges = list(layers[0].histogram_edges)
    counts = [0] * len(layers[0].histogram)
    used = 0
    for layer in layers:
        if list(layer.histogram_edges) == edges and len(layer.histogram) == len(counts):
            counts = [a + b for a, b in zip(counts, layer.histogram, strict=True)]
            used += 1
    if len(edges) == len(counts) + 1:
        labels = [f"{low:.2f}-{high:.2f}" for low, high in itertools.pairwise(edges)]
    else:
        labels = [f"bin {i}" for i in range(len(counts))]
    lines = ["## Row density histogram", ""]
    lines.append(
        f"Rows per bin of per-row weight density (fraction of weights kept), summed over {used} "
        "layer(s)."
    )
    if used < len(layers):
        lines.append(f"{len(layers) - used} layer(s) with other bins are left out.")
    lines += ["", "```text", bar_chart(labels, counts, width=50), "```"]
    return "\n".join(lines)


def _decode_speedup(view: RunView) -> str:
    """Decode speedup bounds from the layers' cost figures (:mod:`solver.math.speedup`)."""
    layers = [e for e in view.layers if e.decode]
    if not layers:
        return ""
    by_type: dict[str, list[dict[str, float]]] = {}
    for layer in layers:
        by_type.setdefault(layer.layer_type or layer.name, []).append(layer.decode)
    known = [t for t in LAYER_TYPE_ORDER if t in by_type]
    groups = [(t, by_type[t]) for t in known + sorted(set(by_type) - set(known))]
    groups.append(("all", [layer.decode for layer in layers]))
    modes = [m for m in speedup.MODES if m != "dense"]
    lines = ["## Estimated decode speedup bounds", ""]
    lines.append(
        "One decode step (batch 1, one token) of the pruned linear layers, summed per layer type: "
        "bytes moved and FLOPs of a dense GEMV, of a weight-sparse kernel (W-sparse: nonzero "
        "weights only), of an activation-sparse kernel (X-sparse: skips the weight columns "
        "whose input is zero) "
        "and of a dual-sparse spMspV kernel (both), in the unit each table names. In "
        "brackets: the speedup bound, dense cost divided by the mode's cost."
    )
    for measure, unit in (("bytes", "B"), ("flops", "FLOP")):
        header = ("layer type", "layers", "dense", *(SHORT_MODE_NAMES[m] for m in modes))
        totals = {name: speedup.total(costs) for name, costs in groups}
        factor, prefix = _si_prefix(totals["all"][f"dense_{measure}"])
        rows = []
        for name, costs in groups:
            cost, ratio = totals[name], speedup.speedups(totals[name])
            rows.append(
                (
                    "**all linear layers**" if name == "all" else f"`{name}`",
                    str(len(costs)),
                    f"{cost[f'dense_{measure}'] / factor:.3g}",
                    *(
                        f"{cost[f'{m}_{measure}'] / factor:.3g} ({_ratio(ratio[m][measure])})"
                        for m in modes
                    ),
                )
            )
        title = "Bytes moved" if measure == "bytes" else "FLOPs"
        lines += ["", f"**{title}, in {prefix}{unit}**", ""]
        lines += _table(header, rows, align="l" + "r" * (len(header) - 1))
    lines.append("")
    lines.append(
        "Assumptions: weights and activations stored in 2 bytes (fp16/bf16); sparse weights in "
        "a column-major bitmap format (n bits per column plus the nonzero values); every mode "
        "reads the whole input vector and writes the output; activation-sparse costs are "
        "expectations over the calibration tokens from each input channel's measured nonzero "
        "frequency (for baselines calibrated on dense inputs, the frequency under the run's "
        "activation sparsity). The bytes ratio bounds a memory-bound kernel (decode usually "
        "is), the FLOPs ratio a compute-bound one; attention, embeddings, norms and the LM head "
        "are not counted, and irregular access costs are ignored, so real speedups are lower."
    )
    return "\n".join(lines)


def _measured_speed(view: RunView) -> str:
    """The latest measured decode speed of the saved model (``duogpt speed RUN_DIR``, recorded
    after the run); absent when it was never measured."""
    measured = view.decode_speed
    if measured is None:
        return ""
    lines = ["## Measured decode speed", ""]
    lines.append(
        f"Measured with `duogpt speed` on {_cell(measured.date) or NA}: batch-1 greedy decode of "
        f"{measured.tokens} tokens with the KV cache (the prefill excluded; the median of the "
        f"timed repeats), on {_cell(measured.device)} ({_cell(measured.dtype)}), backend "
        f"{_cell(measured.backend) or NA}, {measured.threads} thread(s), activation sparsity "
        f"{_pct(measured.act_sparsity)} ({_cell(measured.act_rule) or NA})."
    )
    rows = [
        ("dense", fmt.number(measured.dense_tokens_per_s, 1, NA), "1.00x"),
        (
            "activation-sparse only",
            fmt.number(measured.act_tokens_per_s, 1, NA),
            _ratio(measured.speedup_act),
        ),
        (
            "dual-sparse",
            fmt.number(measured.dual_tokens_per_s, 1, NA),
            _ratio(measured.speedup_dual),
        ),
    ]
    lines += ["", *_table(("model", "tokens/s", "x dense"), rows, align="lrr"), ""]
    lines.append(
        f"Same tokens as the masked dense model: {_yes(measured.same_tokens)} "
        f"(activation-sparse only {_yes(measured.act_same_tokens)}, dual-sparse "
        f"{_yes(measured.dual_same_tokens)})."
    )
    if measured.layers:
        header = ("shape", "layers", *(title for _, title in fmt.SPEED_MODES))
        shape_rows = [
            (
                _shape_cell(row.get("shape")),
                _cell(str(row.get("layers", NA))),
                *(_speed_cell(row, mode) for mode, _ in fmt.SPEED_MODES),
            )
            for row in measured.layers
        ]
        lines += ["", "**Per layer shape: µs per GEMV, x over dense [byte bound]**", ""]
        lines += _table(header, shape_rows, align="lr" + "r" * len(fmt.SPEED_MODES))
        lines += [
            "",
            "One GEMV of a representative layer of each shape in each mode, and in brackets "
            "its speedup bound from bytes moved (as in the estimate above, in the measured "
            "dtype) over every layer of that shape; the `all` row weights each shape by its "
            "number of layers.",
        ]
    more = [f"- Host: {_pairs(measured.host)}"] if measured.host else []
    more += [f"- Note: {_one_line(text)}" for text in measured.notes]
    count = len(view.speed_measurements)
    if count > 1:
        more.append(
            f"- The run was measured {count} times; this is the latest measurement (every one "
            "is in events.jsonl)."
        )
    if more:
        lines += ["", *more]
    return "\n".join(lines)


def _shape_cell(shape: object) -> str:
    """A layer shape as code (``64x64``), the total row in bold."""
    if shape == "all":
        return "**all**"
    return f"`{_cell(str(shape))}`" if shape else NA


def _speed_cell(row: dict[str, Any], mode: str) -> str:
    """One mode of a measured layer-shape row (n/a when the row lacks it)."""
    try:
        return fmt.speed_cell(row, mode)
    except (KeyError, TypeError, ValueError):
        return NA


def _yes(value: bool) -> str:
    """``yes`` or a bold ``no``."""
    return "yes" if value else "**no**"


def _si(value: float, unit: str) -> str:
    """A quantity with an SI prefix and 3 significant digits: ``8192`` -> ``8.19 kB``."""
    factor, prefix = _si_prefix(value)
    return f"{value / factor:.3g} {prefix}{unit}"


def _si_prefix(value: float) -> tuple[float, str]:
    """The SI factor and prefix that write ``value`` with 1 to 3 digits before the point."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return factor, prefix
    return 1.0, ""


def _ratio(value: float) -> str:
    """A speedup ratio such as ``1.85x``."""
    return f"{value:.2f}x" if math.isfinite(value) else NA


def _proxy(view: RunView) -> str:
    """Proxy perplexities measured during the run, if any."""
    proxies = view.proxies
    if not proxies:
        return ""
    rows = [(str(p.block), _ppl(p.ppl), f"{p.windows}x{p.seqlen}") for p in proxies]
    table = _table(("after block", "proxy perplexity", "windows x tokens"), rows, align="rrr")
    return "\n".join(["## Proxy perplexity during the run", "", *table])


def _notes(view: RunView) -> str:
    """Notes and warnings, in the order they came, then what was wrong reading the run."""
    if not view.notes and not view.warnings:
        return ""
    lines = ["## Notes and warnings", ""]
    for note in view.notes:
        level = "**warning**" if note.level == "warning" else note.level or "info"
        lines.append(f"- {level}: {_one_line(note.text)}")
    lines += [f"- **warning**: {_one_line(text)}" for text in view.warnings]
    return "\n".join(lines)


def _failure_detail(view: RunView) -> str:
    """The failure's traceback, when the failed event carries one."""
    failed = view.failed
    if failed is None or not failed.detail.strip():
        return ""
    return "\n".join(["## Error detail", "", "```text", failed.detail.rstrip(), "```"])


# --------------------------------------------------------------------- section helpers


def _headline_perplexities(view: RunView) -> list[tuple[str, ev.PerplexityMeasured]]:
    """The last dense, dense+act and pruned perplexity events, in that order."""
    found = ((label, view.perplexity(label)) for label in PPL_LABELS)
    return [(label, event) for label, event in found if event is not None]


def _measured_protocol(view: RunView) -> dict[str, Any]:
    """The protocol of the last reference perplexity (empty for runs recorded without one)."""
    measured = [e for e in view.perplexities if e.label in PPL_LABELS and e.protocol]
    return dict(measured[-1].protocol) if measured else {}


def _placement_text(protocol: dict[str, Any]) -> str:
    """Where the windows lie and what leads them: ``, spread evenly over its 289,337 tokens``."""
    if not protocol:
        return ""
    total = protocol.get("text_tokens")
    over = f"its {total:,} tokens" if isinstance(total, int) else "it"
    where = {
        "spread": f" spread evenly over {over}",
        "first": f" from the start of {over}",
    }.get(str(protocol.get("placement")), "")
    held = ""
    if protocol.get("calib_chars"):
        start, end = protocol.get("chars", [NA, NA])
        held = f" (characters {start}-{end}, held out from calibration)"
    bos = ", each window starting with BOS" if protocol.get("bos") else ""
    return f"{where}{held}{bos}"


def _protocol_text(view: RunView, config: dict[str, Any] | None = None) -> str:
    """How perplexity was measured: text, windows x tokens (from the events, else the config)."""
    measured = [e for e in view.perplexities if e.label in PPL_LABELS]
    if measured:
        seen = []
        for e in measured:
            text = (
                f"{e.text or NA}, {e.windows} non-overlapping windows x {e.seqlen} tokens"
                f"{_placement_text(e.protocol)}, activation sparsity on for every token"
            )
            if text not in seen:
                seen.append(text)
        return "; ".join(seen)
    if config:
        windows = config.get("eval_windows", NA)
        if windows == 0:
            return f"{config.get('eval', NA)}: skipped (eval_windows 0)"
        return (
            f"{config.get('eval', NA)}, {windows} non-overlapping windows x "
            f"{config.get('eval_seqlen') or config.get('seqlen', NA)} tokens (not measured)"
        )
    return "not measured"


def _calib_from_config(config: dict[str, Any]) -> str:
    """The calibration data as the config asked for it."""
    if not config:
        return NA
    return (
        f"{config.get('calib', NA)}, {config.get('nsamples', NA)} samples x "
        f"{config.get('seqlen', NA)} tokens (as configured)"
    )


def _final_timings(view: RunView) -> str:
    """The finished event's time split, as text."""
    finished = view.finished
    if finished is None or not finished.timings:
        return ""
    keys = _ordered_keys(finished.timings)
    return ", ".join(f"{key} {_seconds(finished.timings[key])}" for key in keys)


def _comparison_row(name: str, view: RunView) -> tuple[str, ...]:
    """One run's row in the comparison table."""
    dense, pruned = view.ppl_dense, view.ppl
    ratio = f"{pruned / dense:.2f}x" if dense and pruned is not None and _finite(pruned) else NA
    return (
        _cell(name),
        view.status,
        _cell(view.model or NA),
        view.method or NA,
        view.pattern or NA,
        _pct(view.weight_sparsity),
        _pct(view.act_sparsity),
        _ppl(dense),
        _ppl(view.ppl_dense_act),
        _ppl(pruned),
        ratio,
        _seconds(view.seconds),
        _megabytes(view.peak_memory_mb),
    )


def _blocks_done(view: RunView) -> str:
    """Blocks pruned, out of how many when known."""
    total = view.n_blocks
    return f"{view.blocks_done}/{total}" if total else str(view.blocks_done)


def _ordered_keys(keys: Iterable[str]) -> list[str]:
    """Timing keys: the known parts in :data:`TIMING_ORDER`, then the rest sorted."""
    unique = set(keys)
    return [k for k in TIMING_ORDER if k in unique] + sorted(unique - set(TIMING_ORDER))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A Markdown table (``align``: one ``l`` or ``r`` per column)."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _pairs(data: dict[str, Any]) -> str:
    """``key value`` pairs in key order."""
    return ", ".join(f"{key} {_config_value(data[key])}" for key in sorted(data))


# --------------------------------------------------------------------- formatting


def _finite(value: float | None) -> bool:
    """True for a finite number."""
    return value is not None and math.isfinite(value)


def _pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal."""
    return fmt.percent(value, NA)


def _ppl(value: float | None) -> str:
    """A perplexity with two decimals."""
    return fmt.perplexity(value, NA)


def _seconds(value: float | None) -> str:
    """Seconds with one decimal."""
    return fmt.seconds(value, NA)


def _megabytes(value: float | None) -> str:
    """Megabytes, rounded."""
    return fmt.megabytes(value, NA)


def _config_value(value: Any) -> str:
    """A configuration value as table text (fixed, repr-based for numbers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + _pairs(value) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_config_value(v) for v in value) + "]"
    return _cell(str(value))


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (one line, pipes escaped)."""
    return _one_line(text).replace("|", "\\|")


def _one_line(text: str) -> str:
    """Collapse newlines to spaces."""
    return " ".join(str(text).split())
