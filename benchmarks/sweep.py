"""Sparsity sweep (issue 4 item 2): weight {0.3 .. 0.7} x activation {0, 0.25, 0.5}.

DuoGPT and SparseGPT at every point; a table and a text plot of perplexity against the
dual-sparse compute fraction ``(1 - p_w)(1 - p_x)`` (the fraction of multiply-adds left).

    .venv/bin/python benchmarks/sweep.py --quick --out results/sweep-quick.md
    .venv/bin/python benchmarks/sweep.py --out results/sweep.md [--methods duogpt]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from duogpt_tui.textplot import scatter_plot

WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7)
ACTS = (0.0, 0.25, 0.5)
QUICK_WEIGHTS = (0.3, 0.7)
QUICK_ACTS = (0.0, 0.5)


def configurations(
    base: dict[str, Any],
    methods: list[str],
    weights: tuple[float, ...] = WEIGHTS,
    acts: tuple[float, ...] = ACTS,
    seeds: Sequence[int] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(label, config)`` for every point of the grid, once per seed (``seeds``, default the
    protocol's seed)."""
    runs = []
    seeds = list(seeds or [int(base["seed"])])
    for method in methods:
        for p_x in acts:
            for p_w in weights:
                config = {
                    **base,
                    "method": method,
                    "weight_sparsity": p_w,
                    "act_sparsity": p_x,
                    "eval_dense": False,
                }
                label = f"{method} W{p_w:.0%} X{p_x:.0%}"
                for seed, one in common.seeded(config, seeds):
                    runs.append((label + (f", seed {seed}" if len(seeds) > 1 else ""), one))
    return runs


def main() -> None:
    """Parse the options, run the grid, write table and plot."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument("--methods", default="duogpt,sparsegpt", help="comma-separated methods")
    args = parser.parse_args()
    base = common.protocol(args.quick, args.threads)
    session = common.Session(args.out)
    isolate = not (args.in_process or args.quick)  # --quick: one process, fast start
    weights, acts = (QUICK_WEIGHTS, QUICK_ACTS) if args.quick else (WEIGHTS, ACTS)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = common.seeds_of(args, base)
    runs = configurations(base, methods, weights, acts, seeds)
    results = common.run_from_args(
        [("reference (dense figures)", common.reference_config(base)), *runs],
        args,
        isolate=isolate,
    )
    session.publish(
        "Sparsity sweep: perplexity vs weight and activation sparsity",
        [render(results[1:], results[0][2], seeds)],
        protocol_line=common.protocol_text(base, args.quick, args.jobs, reference=True)
        + common.seeds_text(seeds),
        results=results,
    )


Point = tuple[str, float, float]
"""A grid point: method, weight sparsity, activation sparsity."""


def by_point(
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> dict[Point, dict[int, dict[str, Any]]]:
    """Each grid point's summaries by seed, in the order of the runs."""
    points: dict[Point, dict[int, dict[str, Any]]] = {}
    for _label, config, summary in results:
        key = (config["method"], config["weight_sparsity"], config["act_sparsity"])
        points.setdefault(key, {})[int(config.get("seed", 0))] = summary
    return points


def render(
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
    reference: dict[str, Any],
    seeds: Sequence[int] | None = None,
) -> str:
    """The table (one row per run) and the plot (one series per method and p_x); the dense
    perplexity comes from the ``reference`` run. With several ``seeds``: one row per point with
    mean ± sd and each seed's value, and the grid and plots of the means."""
    if seeds is not None and len(seeds) > 1:
        return render_seeds(results, reference, seeds)
    dense_ppl = reference.get("ppl_dense")
    header = (
        "method",
        "p_w",
        "p_x",
        "compute fraction",
        "ppl",
        "x dense",
        "weight sparsity",
        "act. sparsity",
        "wall s",
    )
    rows: list[tuple[str, ...]] = []
    series: dict[str, list[tuple[float, float]]] = {}
    for _label, config, summary in results:
        p_w, p_x = config["weight_sparsity"], config["act_sparsity"]
        fraction = (1 - p_w) * (1 - p_x)
        ppl, dense = summary.get("ppl_pruned"), dense_ppl
        rows.append(
            (
                config["method"],
                f"{p_w:.2f}",
                f"{p_x:.2f}",
                f"{fraction:.3f}",
                common.fmt(ppl)
                if summary.get("status") == "finished"
                else summary.get("status", "failed"),
                common.fmt(ppl / dense) if ppl and dense else "n/a",
                common.pct(summary.get("weight_sparsity")),
                common.pct(summary.get("eval_act_sparsity")),
                common.fmt(summary.get("wall_s"), 0),
            )
        )
        if ppl:
            series.setdefault(f"{config['method']} X{p_x:.0%}", []).append((fraction, ppl))
    parts = [grid(results), common.table(header, rows, align="lrrrrrrrr")]
    if dense_ppl:
        parts.append(f"Dense perplexity (compute fraction 1): {dense_ppl:.2f}.")
    parts += ["```text\n" + plot + "\n```" for plot in plots_of(series)]
    return "\n\n".join(parts)


def plots_of(series: dict[str, list[tuple[float, float]]]) -> list[str]:
    """The plot of all points (one series per method), then one plot per method."""
    methods = sorted({name.split(" ")[0] for name in series})
    plots = [
        scatter_plot(
            {name: pts for name, pts in series.items() if name.split(" ")[0] == method},
            width=78,
            height=14,
            log_y=True,
            title=f"{method}: perplexity (log) vs dual-sparse compute fraction (1 - p_w)(1 - p_x)",
            x_label="(1 - p_w)(1 - p_x): fraction of multiply-adds left",
        )
        for method in methods
    ]
    combined = scatter_plot(
        {
            method: [
                pt for name, pts in series.items() if name.split(" ")[0] == method for pt in pts
            ]
            for method in methods
        },
        width=78,
        height=16,
        log_y=True,
        title="all points: perplexity (log) vs (1 - p_w)(1 - p_x), one series per method",
        x_label="(1 - p_w)(1 - p_x): fraction of multiply-adds left",
    )
    return [combined, *plots]


def render_seeds(
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
    reference: dict[str, Any],
    seeds: Sequence[int],
) -> str:
    """One row per grid point: perplexity mean ± sd over the seeds and each seed's value; the
    grid and the plots show the means."""
    dense = reference.get("ppl_dense")
    header = (
        "method",
        "p_w",
        "p_x",
        "compute fraction",
        "ppl mean ± sd",
        "x dense",
        *(f"seed {seed}" for seed in seeds),
        "act. sparsity",
        "wall s",
    )
    rows: list[tuple[str, ...]] = []
    series: dict[str, list[tuple[float, float]]] = {}
    means: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for (method, p_w, p_x), summaries in by_point(results).items():
        ppl = common.seed_figures(summaries, seeds)
        mean = ppl.mean
        fraction = (1 - p_w) * (1 - p_x)
        rows.append(
            (
                method,
                f"{p_w:.2f}",
                f"{p_x:.2f}",
                f"{fraction:.3f}",
                ppl.mean_sd(),
                common.fmt(mean / dense) if mean and dense else "n/a",
                *ppl.cells(),
                common.pct(common.seed_figures(summaries, seeds, "eval_act_sparsity").mean),
                common.fmt(common.seed_figures(summaries, seeds, "wall_s").mean, 0),
            )
        )
        config = {"method": method, "weight_sparsity": p_w, "act_sparsity": p_x}
        status = "finished" if mean is not None else "failed"
        means.append(("mean", config, {"status": status, "ppl_pruned": mean}))
        if mean:
            series.setdefault(f"{method} X{p_x:.0%}", []).append((fraction, mean))
    parts = [
        "Means over the seeds:\n\n" + grid(means),
        common.table(header, rows, align="lrrrrr" + "r" * (len(seeds) + 2)),
    ]
    if dense:
        parts.append(f"Dense perplexity (compute fraction 1): {dense:.2f}.")
    parts += ["```text\n" + plot + "\n```" for plot in plots_of(series)]
    return "\n\n".join(parts)


def grid(results: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> str:
    """Perplexity at a glance: one row per weight sparsity, one column per method and
    activation sparsity; the better method at each point in bold."""
    cells: dict[tuple[str, float, float], float] = {}
    for _label, config, summary in results:
        if summary.get("status") == "finished" and summary.get("ppl_pruned"):
            key = (config["method"], config["weight_sparsity"], config["act_sparsity"])
            cells[key] = summary["ppl_pruned"]
    methods = sorted({m for m, _, _ in cells})
    weights = sorted({w for _, w, _ in cells})
    acts = sorted({x for _, _, x in cells})
    header = ["p_w", *[f"{m} X{x:.0%}" for x in acts for m in methods]]
    rows = []
    for w in weights:
        row = [f"{w:.0%}"]
        for x in acts:
            found = {m: cells.get((m, w, x)) for m in methods}
            best = min((v for v in found.values() if v is not None), default=None)
            for m in methods:
                value = found[m]
                text = common.fmt(value) if value is not None else "n/a"
                row.append(f"**{text}**" if value is not None and value == best else text)
        rows.append(row)
    return common.table(header, rows)


if __name__ == "__main__":
    main()
