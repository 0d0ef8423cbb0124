"""Method comparison (issue 4 item 1): dense, magnitude, Wanda, SparseGPT, DuoGPT.

At W50% + X50% (per-token top-k), at W50% + X0% and at 2:4 + X50%, plus "SparseGPT calibrated on
sparse activations" (DuoGPT with alpha 0) wherever activations are sparse, to show what DuoGPT's
residual term adds (at X0% the inputs are dense and alpha 0 is SparseGPT). Perplexity,
achieved sparsities, wall time, peak RSS, and the dual-sparse decode bytes bound.

    .venv/bin/python benchmarks/methods.py --quick --out results/methods-quick.md
    .venv/bin/python benchmarks/methods.py --out results/methods.md [--only duogpt,sparsegpt]
    .venv/bin/python benchmarks/methods.py --seeds 0 1 2 --nsamples 64 --out results/methods-64.md
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
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


def configurations(
    base: dict[str, Any], seeds: Sequence[int] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(setting, method label, config)`` for every run: each row once per seed (``seeds``,
    default the protocol's seed; magnitude once, it reads no calibration data)."""
    out = []
    base = {**base, "eval_dense": False}
    seeds = list(seeds or [int(base["seed"])])
    rows = []
    for setting, fields in SETTINGS:
        for method in METHODS:
            rows.append((setting, method, {**base, **fields, "method": method}))
        if fields.get("act_sparsity") != 0.0:  # at X0% it is SparseGPT itself
            label = "sparsegpt on sparse acts (duogpt alpha 0)"
            rows.append((setting, label, {**base, **fields, "method": "duogpt", "alpha": 0.0}))
    for setting, label, config in rows:
        out += [(setting, label, seeded) for _, seeded in common.seeded(config, seeds)]
    return out


def main() -> None:
    """Parse the options, run, write the table."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated method labels to run")
    parser.add_argument(
        "--settings", default="", help="comma-separated settings to run, e.g. 'W50%% + X0%%'"
    )
    parser.add_argument(
        "--nsamples",
        type=int,
        default=0,
        help="calibration samples (0: the protocol's; issue 12 also measures 64)",
    )
    args = parser.parse_args()
    base = common.protocol(args.quick, args.threads)
    if args.nsamples > 0:
        base["nsamples"] = args.nsamples
    session = common.Session(args.out)
    isolate = not (args.in_process or args.quick)  # --quick: one process, fast start
    seeds = common.seeds_of(args, base)
    runs = configurations(base, seeds)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        runs = [r for r in runs if r[1] in wanted or r[1].split(" ")[0] in wanted]
    if args.settings:
        chosen = {name.strip() for name in args.settings.split(",")}
        runs = [r for r in runs if r[0] in chosen]
    results = common.run_from_args(
        [("reference (dense figures)", common.reference_config(base))]
        + [(_run_label(setting, label, config, seeds), config) for setting, label, config in runs],
        args,
        isolate=isolate,
    )
    session.publish(
        "Methods: perplexity, sparsity, time and memory",
        [render(runs, results[1:], results[0][2], in_process=not isolate, seeds=seeds)],
        protocol_line=common.protocol_text(base, args.quick, args.jobs, reference=True)
        + common.seeds_text(seeds),
        results=results,
    )


def _run_label(setting: str, label: str, config: dict[str, Any], seeds: Sequence[int]) -> str:
    """A run's label on stderr (its seed when there are several)."""
    return f"{setting} {label}" + (f", seed {config['seed']}" if len(seeds) > 1 else "")


def render(
    runs: list[tuple[str, str, dict[str, Any]]],
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
    reference: dict[str, Any],
    *,
    in_process: bool = False,
    seeds: Sequence[int] | None = None,
) -> str:
    """The table: dense rows first (from the reference run), then one row per run; with
    several ``seeds``, one row per setting and method with mean ± sd and each seed's value."""
    if seeds is not None and len(seeds) > 1:
        return render_seeds(runs, results, reference, seeds)
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


def render_seeds(
    runs: list[tuple[str, str, dict[str, Any]]],
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
    reference: dict[str, Any],
    seeds: Sequence[int],
) -> str:
    """One row per setting and method: perplexity mean ± sd over the seeds, x dense (of the
    mean), each seed's perplexity, and the seeds' mean sparsities, wall time and bytes bound."""
    grouped: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for (setting, label, config), (_, _, summary) in zip(runs, results, strict=True):
        grouped.setdefault((setting, label), {})[int(config["seed"])] = summary
    header = (
        "setting",
        "method",
        "ppl mean ± sd",
        "x dense",
        *(f"seed {seed}" for seed in seeds),
        "weight sparsity",
        "act. sparsity",
        "wall s",
        "dual-sparse bytes bound",
    )
    dense = reference.get("ppl_dense")
    rows: list[tuple[str, ...]] = []
    blanks = ("-",) * (len(seeds) - 1)
    if dense:
        rows.append(("W0% + X0%", "dense", common.fmt(dense), "1.00", common.fmt(dense), *blanks))
        rows[-1] += ("0.0%", "0.0%", "", "1.00x")
    dense_act = reference.get("ppl_dense_act")
    if dense_act:
        ratio = common.fmt(dense_act / dense) if dense else "n/a"
        name = ("W0% + X50%", "dense + activation sparsity")
        value = common.fmt(dense_act)
        rows.append((*name, value, ratio, value, *blanks, "0.0%", "50.0%", "", ""))
    for (setting, label), summaries in grouped.items():
        ppl = common.seed_figures(summaries, seeds)
        mean = ppl.mean
        rows.append(
            (
                setting,
                label,
                ppl.mean_sd(),
                common.fmt(mean / dense) if mean and dense else "n/a",
                *ppl.cells(),
                common.pct(common.seed_figures(summaries, seeds, "weight_sparsity").mean),
                common.pct(common.seed_figures(summaries, seeds, "eval_act_sparsity").mean),
                common.fmt(common.seed_figures(summaries, seeds, "wall_s").mean, 0),
                _mean_bound(summaries),
            )
        )
    note = (
        "ppl mean ± sd: over the calibration seeds (sd with n-1); the dense rows read no "
        "calibration data (one value). weight and act. sparsity, wall s: means over the seeds. "
        "dual-sparse bytes bound: dense decode bytes / dual-sparse (spMspV) decode bytes over "
        "all pruned linear layers, mean over the seeds."
    )
    return common.table(header, rows, align="ll" + "r" * (len(header) - 2)) + "\n\n" + note


def _mean_bound(summaries: dict[int, dict[str, Any]]) -> str:
    """The mean dual-sparse bytes bound of the finished seeds."""
    bounds = [
        s["speedup_bytes"]["dual"]
        for s in summaries.values()
        if s.get("status") == "finished" and s.get("speedup_bytes", {}).get("dual")
    ]
    return f"{sum(bounds) / len(bounds):.2f}x" if bounds else "n/a"


if __name__ == "__main__":
    main()
