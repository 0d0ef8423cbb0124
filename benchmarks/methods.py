"""Method comparison (issue 4 item 1): dense, magnitude, Wanda, SparseGPT, DuoGPT.

At W50% + X50% (per-token top-k), at W50% + X0% and at 2:4 + X50%, plus "SparseGPT calibrated on
sparse activations" (DuoGPT with alpha 0) to show what DuoGPT's residual term adds. Perplexity,
achieved sparsities, wall time, peak RSS, and the dual-sparse decode bytes bound.

    .venv/bin/python benchmarks/methods.py --quick --out results/methods-quick.md
    .venv/bin/python benchmarks/methods.py --out results/methods.md [--only duogpt,sparsegpt]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

METHODS = ("magnitude", "wanda", "sparsegpt", "duogpt")

SETTINGS = (
    ("W50% + X50%", {"weight_sparsity": 0.5, "act_sparsity": 0.5}),
    ("W50% + X0%", {"weight_sparsity": 0.5, "act_sparsity": 0.0}),
    ("2:4 + X50%", {"pattern": "2:4", "act_sparsity": 0.5}),
)


def configurations(base: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(setting, method label, config)`` for every row that needs a run."""
    out = []
    base = {**base, "eval_dense": False}
    for setting, fields in SETTINGS:
        for method in METHODS:
            out.append((setting, method, {**base, **fields, "method": method}))
        if setting == "W50% + X50%":
            label = "sparsegpt on sparse acts (duogpt alpha 0)"
            out.append((setting, label, {**base, **fields, "method": "duogpt", "alpha": 0.0}))
    return out


def main() -> None:
    """Parse the options, run, write the table."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated method labels to run")
    parser.add_argument(
        "--settings", default="", help="comma-separated settings to run, e.g. 'W50%% + X0%%'"
    )
    args = parser.parse_args()
    base = common.protocol(args.quick, args.threads)
    session = common.Session(args.out)
    isolate = not (args.in_process or args.quick)  # --quick: one process, fast start
    runs = configurations(base)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        runs = [r for r in runs if r[1] in wanted or r[1].split(" ")[0] in wanted]
    if args.settings:
        chosen = {name.strip() for name in args.settings.split(",")}
        runs = [r for r in runs if r[0] in chosen]
    results = common.run_from_args(
        [("reference (dense figures)", common.reference_config(base))]
        + [(f"{setting} {label}", config) for setting, label, config in runs],
        args,
        isolate=isolate,
    )
    session.publish(
        "Methods: perplexity, sparsity, time and memory",
        [render(runs, results[1:], results[0][2], in_process=not isolate)],
        protocol_line=common.protocol_text(base, args.quick, args.jobs, reference=True),
        results=results,
    )


def render(
    runs: list[tuple[str, str, dict[str, Any]]],
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
    reference: dict[str, Any],
    *,
    in_process: bool = False,
) -> str:
    """The table: dense rows first (from the reference run), then one row per run."""
    header = (
        "setting",
        "method",
        "ppl",
        "x dense",
        "weight sparsity",
        "act. sparsity",
        "wall s",
        "solve s",
        "peak RSS MB",
        "dual-sparse bytes bound",
    )
    rows: list[tuple[str, ...]] = []
    dense = reference.get("ppl_dense")
    if dense:
        rows.append(("W0% + X0%", "dense", common.fmt(dense), "1.00", "0.0%", "0.0%"))
        rows[-1] += ("", "", "", "1.00x")
    dense_act = reference.get("ppl_dense_act")
    if dense_act:
        ratio = common.fmt(dense_act / dense) if dense else "n/a"
        dense_row = ("W0% + X50%", "dense + activation sparsity", common.fmt(dense_act), ratio)
        rows.append((*dense_row, "0.0%", "50.0%", "", "", "", ""))
    for (setting, label, _config), (_, _, summary) in zip(runs, results, strict=True):
        ppl = summary.get("ppl_pruned")
        bound = summary.get("speedup_bytes", {}).get("dual")
        if summary.get("status") != "finished":
            rows.append((setting, label, summary.get("status", "failed"), summary.get("error", "")))
            rows[-1] += ("",) * 6
            continue
        rows.append(
            (
                setting,
                label,
                common.fmt(ppl),
                common.fmt(ppl / dense) if ppl and dense else "n/a",
                common.pct(summary.get("weight_sparsity")),
                common.pct(summary.get("eval_act_sparsity", summary.get("act_sparsity"))),
                common.fmt(summary.get("wall_s"), 0),
                common.fmt(summary.get("solve_s"), 1),
                common.fmt(summary.get("peak_rss_mb"), 0),
                f"{bound:.2f}x" if bound else "n/a",
            )
        )
    note = (
        "wall s: the whole run in its process (load, pruning, final evaluation); solve s: sum "
        "of the layer solves. dual-sparse bytes bound: dense "
        "decode bytes / dual-sparse (spMspV) decode bytes over all pruned linear layers "
        "(solver/math/speedup.py: fp16 values, column-major bitmap)."
    )
    if in_process:
        note += " Runs shared one process: peak RSS is the process's running maximum."
    return common.table(header, rows, align="llrrrrrrrr") + "\n\n" + note


if __name__ == "__main__":
    main()
