"""Ablations of every [choice] of ALGORITHM.md (issue 4 item 3), DuoGPT at W50% + X50%.

alpha {0, 0.125, 0.25, 0.5, 1}; damping {0.1, 1} of each channel's H_jj (the default is 0.3); each
default of issue 9 turned off on its own (``issue9``); act-order off/on; residual variant
original/pruned; true-sequential vs all-at-once; top-k vs threshold activation rule; calibration
size {16, 32, 64, 128} samples x seqlen {256, 512} (at each alpha of ``--calib-alphas``), and
alpha {0, 0.125, 0.25, 0.5} at 64 x 256 and 128 x 256 calibration tokens (``alpha_calibration``,
issue 12; ``--alpha-calib-samples`` changes the sizes). Every
group changes one option from the defaults; the default configuration runs once and is shared.

    .venv/bin/python benchmarks/ablations.py --quick --out results/ablations-quick.md
    .venv/bin/python benchmarks/ablations.py --out results/ablations.md [--groups alpha,damping]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

GROUPS: dict[str, tuple[str, list[Any]]] = {
    "alpha": ("alpha", [0.0, 0.125, 0.25, 0.5, 1.0]),
    "damping": ("damping", [0.1, 1.0]),
    "act_order": ("act_order", [False, True]),
    "residual": ("residual_variant", ["original", "pruned"]),
    "sequential": ("true_sequential", [True, False]),
    "act_rule": ("act_rule", ["topk", "threshold"]),
}
"""Group name -> (config field, values)."""

OVERRIDES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "issue9": [
        ("--mask-scope block", {"mask_scope": "block"}),
        ("--token-clip 0", {"token_clip": 0.0}),
        ("--residual-damping 0", {"residual_damping": 0.0}),
        ("--damping-rule mean --damping 0.01", {"damping_rule": "mean", "damping": 0.01}),
    ],
}
"""Group name -> (label, options changed together) rows: each default that issue 9 introduced,
turned back to its old value on its own."""

ALL_GROUPS = [*GROUPS, *OVERRIDES, "calibration", "alpha_calibration"]

CALIB = ([16, 32, 64, 128], [256, 512])
QUICK_CALIB = ([4, 8], [128])
QUICK_ALPHAS = [0.0, 0.125, 1.0]  # --quick: fewer alphas

ALPHA_CALIB = ([64, 128], [256], [0.0, 0.125, 0.25, 0.5])
"""Group ``alpha_calibration``: samples, seqlens and alphas, to see how the best alpha moves
with the calibration size (the ``alpha`` group has it at the base protocol's 16 x 256)."""
QUICK_ALPHA_CALIB = ([8], [128], [0.0, 0.125])


def configurations(
    base: dict[str, Any],
    groups: list[str],
    calib: tuple[list[int], list[int]],
    alphas: list[float],
    alpha_calib: tuple[list[int], list[int], list[float]] = ALPHA_CALIB,
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(group, value label, config)`` for every row."""
    default = {
        **base,
        "method": "duogpt",
        "weight_sparsity": 0.5,
        "act_sparsity": 0.5,
        "eval_dense": False,
    }
    rows = []

    def grid(group: str, samples: list[int], seqlens: list[int], values: list[float]) -> None:
        for alpha in values:
            for seqlen in seqlens:
                for nsamples in samples:
                    config = {**default, "nsamples": nsamples, "seqlen": seqlen, "alpha": alpha}
                    if seqlen != base["seqlen"]:  # the evaluation stays the base protocol's
                        config["eval_seqlen"] = base["seqlen"]
                    rows.append((group, f"{nsamples} x {seqlen}, alpha {alpha:g}", config))

    for group in groups:
        if group == "calibration":
            grid(group, calib[0], calib[1], alphas)
            continue
        if group == "alpha_calibration":
            grid(group, *alpha_calib)
            continue
        if group in OVERRIDES:
            rows.extend((group, label, {**default, **change}) for label, change in OVERRIDES[group])
            continue
        field, values = GROUPS[group]
        for value in values:
            rows.append((group, f"{field} = {value}", {**default, field: value}))
    return rows


def main() -> None:
    """Parse the options, run each distinct configuration once, write the table."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument(
        "--groups",
        default=",".join(ALL_GROUPS),
        help=f"comma-separated groups among {', '.join(ALL_GROUPS)}",
    )
    parser.add_argument(
        "--calib-alphas", default="0.125", help="alphas of the calibration-size grid"
    )
    parser.add_argument(
        "--alpha-calib-samples",
        default=",".join(str(n) for n in ALPHA_CALIB[0]),
        help="calibration sample counts of the alpha_calibration group (at seqlen 256)",
    )
    args = parser.parse_args()
    base = common.protocol(args.quick, args.threads)
    session = common.Session(args.out)
    isolate = not (args.in_process or args.quick)  # --quick: one process, fast start
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    alphas = [float(a) for a in args.calib_alphas.split(",") if a.strip()]
    if args.quick:
        GROUPS["alpha"] = ("alpha", QUICK_ALPHAS)
    rows = configurations(
        base,
        groups,
        QUICK_CALIB if args.quick else CALIB,
        alphas,
        QUICK_ALPHA_CALIB if args.quick else alpha_calib_grid(args.alpha_calib_samples),
    )
    seeds = common.seeds_of(args, base)
    distinct = distinct_configs(rows, seeds)
    results = common.run_from_args(
        [("reference (dense figures)", common.reference_config(base))]
        + [(f"config {i}", c) for i, c in enumerate(distinct.values(), 1)],
        args,
        isolate=isolate,
    )
    reference = results[0][2]
    by_key = {common.config_key(c): s for _, c, s in results[1:]}
    session.publish(
        "Ablations of DuoGPT's [choice] options (W50% + X50%)",
        [render(rows, by_key, reference.get("ppl_dense"), seeds)],
        protocol_line=common.protocol_text(base, args.quick, args.jobs, reference=True)
        + " The calibration-size rows keep the base protocol's evaluation (the same windows of "
        f"{base['seqlen']} tokens) whatever their calibration seqlen." + common.seeds_text(seeds),
        results=results,
    )


def alpha_calib_grid(samples: str) -> tuple[list[int], list[int], list[float]]:
    """The ``alpha_calibration`` grid with the sample counts of ``--alpha-calib-samples``."""
    counts = [int(n) for n in samples.split(",") if n.strip()]
    return counts, ALPHA_CALIB[1], ALPHA_CALIB[2]


def distinct_configs(
    rows: list[tuple[str, str, dict[str, Any]]], seeds: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """Every distinct configuration to run, once per seed (shared rows run once), by key."""
    distinct: dict[str, dict[str, Any]] = {}
    for _group, _label, config in rows:
        for _seed, one in common.seeded(config, seeds):
            distinct.setdefault(common.config_key(one), one)
    return distinct


def render(
    rows: list[tuple[str, str, dict[str, Any]]],
    by_key: dict[str, dict[str, Any]],
    dense: float | None,
    seeds: Sequence[int] | None = None,
) -> str:
    """One row per ablation row, ``x dense`` against the ``dense`` perplexity; the best
    perplexity of each group in bold. With several ``seeds``: mean ± sd over them (the best
    mean in bold) and each seed's value."""
    if seeds is not None and len(seeds) > 1:
        return render_seeds(rows, by_key, dense, seeds)
    header = ("group", "setting", "ppl", "x dense", "act. sparsity", "wall s", "solve s")
    best: dict[str, float] = {}
    for group, _, config in rows:
        ppl = by_key[common.config_key(config)].get("ppl_pruned")
        if ppl is not None:
            best[group] = min(best.get(group, ppl), ppl)
    out = []
    for group, label, config in rows:
        summary = by_key[common.config_key(config)]
        ppl = summary.get("ppl_pruned")
        text = common.fmt(ppl) if summary.get("status") == "finished" else summary.get("status")
        if ppl is not None and ppl == best.get(group):
            text = f"**{text}**"
        out.append(
            (
                group,
                label,
                str(text),
                common.fmt(ppl / dense) if ppl and dense else "n/a",
                common.pct(summary.get("eval_act_sparsity")),
                common.fmt(summary.get("wall_s"), 0),
                common.fmt(summary.get("solve_s"), 1),
            )
        )
    return common.table(header, out, align="llrrrrr")


def render_seeds(
    rows: list[tuple[str, str, dict[str, Any]]],
    by_key: dict[str, dict[str, Any]],
    dense: float | None,
    seeds: Sequence[int],
) -> str:
    """One row per ablation row: perplexity mean ± sd over the seeds (the best mean of each
    group in bold), x dense of the mean, each seed's value, mean act. sparsity and times."""
    figures = []
    for group, label, config in rows:
        summaries = {
            seed: by_key.get(common.config_key(one), {"status": "not run"})
            for seed, one in common.seeded(config, seeds)
        }
        figures.append((group, label, summaries, common.seed_figures(summaries, seeds)))
    best: dict[str, float] = {}
    for group, _, _, ppl in figures:
        if ppl.mean is not None:
            best[group] = min(best.get(group, ppl.mean), ppl.mean)
    header = (
        "group",
        "setting",
        "ppl mean ± sd",
        "x dense",
        *(f"seed {seed}" for seed in seeds),
        "act. sparsity",
        "wall s",
        "solve s",
    )
    out = []
    for group, label, summaries, ppl in figures:
        text = ppl.mean_sd()
        if ppl.mean is not None and ppl.mean == best.get(group):
            text = f"**{text}**"
        out.append(
            (
                group,
                label,
                text,
                common.fmt(ppl.mean / dense) if ppl.mean and dense else "n/a",
                *ppl.cells(),
                common.pct(common.seed_figures(summaries, seeds, "eval_act_sparsity").mean),
                common.fmt(common.seed_figures(summaries, seeds, "wall_s").mean, 0),
                common.fmt(common.seed_figures(summaries, seeds, "solve_s").mean, 1),
            )
        )
    return common.table(header, out, align="ll" + "r" * (len(header) - 2))


if __name__ == "__main__":
    main()
