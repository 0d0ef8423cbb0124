"""Per-layer diagnostics of the DuoGPT residual (issue 9): why does it help one model and not
another?

Walks the decoder blocks with the two streams of ALGORITHM.md §6, like the pipeline, and for every
group of layers that share an input measures, on the *fit* calibration tokens:

* the residual's share ``||W (X~ - X^)|| / ||W X^||``;
* how much of the mismatch energy ``||dX_t||^2`` the single largest token carries, and where that
  token sits in its window (position 0 is the first token of a calibration window);
* the Hessian: rank, ``max/mean`` and ``mean/median`` of its diagonal (massive channels), the
  condition number after damping;
* dead channels: inputs never active (``diag(H) == 0``) in the activation-sparse calibration.

Then it solves every layer with several variants (alpha, damping rule...) and scores each by the
layer objective ``||W' X^ - W X~||^2 / ||W X~||^2`` on *held-out* calibration tokens (a second,
disjoint set of calibration windows, sparse as at evaluation). The compressed stream advances with
one chosen variant, so every variant is compared on the same inputs.

    python benchmarks/residual_diagnostics.py --model qwen.gguf --nsamples 16 --seqlen 128 \
        --threads 1 --out results/residual_diagnostics-qwen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from solver.math.activations import topk_sparsify  # noqa: E402
from solver.math.masks import apply_mask, wanda_mask  # noqa: E402
from solver.math.obc import layer_errors, prune_obc  # noqa: E402
from solver.math.stats import LayerStats  # noqa: E402
from solver.run.adapters import find_adapter  # noqa: E402
from solver.run.capture import capture_block_inputs, capture_inputs, run_block, run_until  # noqa: E402
from solver.run.discovery import in_features, layer_weight  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "wanda": {"kind": "wanda"},
    "sparsegpt": {"kind": "obc", "calib": "dense", "alpha": 0.0},
    "alpha0": {"kind": "obc", "calib": "sparse", "alpha": 0.0},
    "alpha0.125": {"kind": "obc", "calib": "sparse", "alpha": 0.125},
}
"""name -> how to solve: ``wanda``; ``obc`` on dense (SparseGPT) or sparse statistics with an
alpha, and optional ``damping`` / ``damping_rule`` / ``mask_scope`` / ``residual_damping``
overrides (unset ones are :func:`solver.math.obc.prune_obc`'s defaults: the reference algorithm with
block masks, not the product's defaults)."""


def parse_variants(text: str) -> dict[str, dict[str, Any]]:
    """``name=json;name=json`` or names of :data:`VARIANTS` separated by commas."""
    out: dict[str, dict[str, Any]] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            name, spec = part.split("=", 1)
            out[name.strip()] = json.loads(spec)
        else:
            for name in part.split(","):
                out[name.strip()] = VARIANTS[name.strip()]
    return out


def token_dominance(dx: torch.Tensor, seqlen: int) -> dict[str, float]:
    """How concentrated the mismatch energy is over tokens (``dx``: ``(t, k)``)."""
    energy = (dx.double() ** 2).sum(dim=1)
    total = float(energy.sum()) or 1.0
    top = torch.topk(energy, min(16, energy.numel()))
    return {
        "top1_share": float(top.values[0]) / total,
        "top16_share": float(top.values.sum()) / total,
        "top1_position": int(top.indices[0]) % seqlen,
        "pos0_share": float(energy.reshape(-1, seqlen)[:, 0].sum()) / total,
    }


def hessian_facts(H: torch.Tensor, damping: float) -> dict[str, float]:
    """Rank, diagonal spread and condition of the damped ``H``."""
    diag = torch.diagonal(H).double()
    live = diag[diag > 0]
    eig = torch.linalg.eigvalsh(H.double())
    top = float(eig[-1])
    rank = int((eig > top * 1e-7).sum())
    damped = eig + damping * float(diag.mean())
    return {
        "k": int(H.shape[0]),
        "rank": rank,
        "dead": int((diag == 0).sum()),
        "diag_max_over_mean": float(live.max() / live.mean()) if live.numel() else 0.0,
        "diag_mean_over_median": float(live.mean() / live.median()) if live.numel() else 0.0,
        "cond_damped": float(damped[-1] / damped[0]),
    }


def solve(
    weight: torch.Tensor,
    fit: LayerStats,
    fit_raw_h: torch.Tensor,
    variant: dict[str, Any],
    sparsity: float,
    base_damping: float,
) -> torch.Tensor:
    """One variant's pruned weight."""
    if variant["kind"] == "wanda":
        return apply_mask(weight, wanda_mask(weight, torch.diagonal(fit_raw_h), sparsity, None))
    dense = variant.get("calib") == "dense"
    H = fit_raw_h if dense else fit.H
    alpha = float(variant.get("alpha", 0.0))
    kwargs: dict[str, Any] = {}
    for key in ("damping_rule", "mask_scope", "residual_damping"):
        if key in variant:
            kwargs[key] = variant[key]
    result = prune_obc(
        weight,
        H,
        G=None if dense or not alpha else fit.G,
        g=None if dense or not alpha else fit.g,
        sparsity=sparsity,
        alpha=alpha,
        damping=float(variant.get("damping", base_damping)),
        **kwargs,
    )
    return result.weight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--calib", default="sotu")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--holdout", type=int, default=16, help="held-out calibration windows")
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weight-sparsity", type=float, default=0.5)
    parser.add_argument("--act-sparsity", type=float, default=0.5)
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--variants", default="wanda,sparsegpt,alpha0,alpha0.125")
    parser.add_argument("--advance", default="alpha0.125", help="variant that moves the stream")
    parser.add_argument("--token-clip", type=float, default=0.0, help="as RunConfig.token_clip")
    parser.add_argument("--blocks", type=int, default=0, help="first N blocks only (0: all)")
    parser.add_argument("--no-hessian", action="store_true", help="skip eigenvalues (faster)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = parse_variants(args.variants)
    if args.advance not in variants:
        variants[args.advance] = parse_variants(args.advance)[args.advance]

    from solver.io.data import calibration_batch, load_text
    from solver.io.models import load_model

    torch.manual_seed(args.seed)
    loaded = load_model(args.model, dtype=torch.float32)
    model = loaded.model
    adapter = find_adapter(model)
    _, text = load_text(args.calib)
    total = args.nsamples + args.holdout
    ids = calibration_batch(loaded.tokenizer, text, total, args.seqlen, args.seed)
    blocks = adapter.blocks(model)
    batches = list(torch.split(ids, 8))
    hidden, extras = capture_block_inputs(model, blocks[0], batches)
    n_fit_batches = (args.nsamples + 7) // 8
    assert args.nsamples % 8 == 0 and args.holdout % 8 == 0, "use multiples of 8"
    dense = [h.clone() for h in hidden]
    compressed = [h.clone() for h in hidden]
    p_x = args.act_sparsity
    records: list[dict[str, Any]] = []
    n_blocks = args.blocks or len(blocks)
    tick = time.monotonic()
    for index in range(n_blocks):
        block = blocks[index]
        linears = adapter.linears(block)
        firsts = {g[0]: linears[g[0]] for g in adapter.groups}
        dense_in: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad(), capture_inputs(firsts, dense_in):
            for b in range(len(dense)):
                dense[b] = run_block(block, dense[b], extras[b])
        hooks = []
        for module in linears.values():
            hooks.append(
                module.register_forward_pre_hook(lambda _m, a: (topk_sparsify(a[0], p_x), *a[1:]))
            )
        try:
            for group in adapter.groups:
                raw: dict[str, list[torch.Tensor]] = {}
                with (
                    torch.no_grad(),
                    capture_inputs({group[0]: linears[group[0]]}, raw, stop_after=group[0]),
                ):
                    for b in range(len(compressed)):
                        run_until(block, compressed[b], extras[b])
                k = in_features(linears[group[0]])
                fit, ho = LayerStats.empty(k), LayerStats.empty(k)
                fit_raw = LayerStats.empty(k)
                dxs = []
                for b, (x_raw, x_dense) in enumerate(
                    zip(raw[group[0]], dense_in[group[0]], strict=True)
                ):
                    xs = topk_sparsify(x_raw, p_x)
                    clip = args.token_clip
                    if b < n_fit_batches:
                        fit.add(xs, x_dense, token_clip=clip)
                        fit_raw.add(x_raw, token_clip=clip)
                        dxs.append((x_dense - xs).reshape(-1, k))
                    else:
                        ho.add(xs, x_dense, token_clip=clip)
                dom = token_dominance(torch.cat(dxs), args.seqlen)
                hfacts = (
                    {"k": k, "dead": int((torch.diagonal(fit.H) == 0).sum())}
                    if args.no_hessian
                    else hessian_facts(fit.H, args.damping)
                )
                for name in group:
                    module = linears[name]
                    W = layer_weight(module).float()
                    whw = float((W @ fit.H * W).sum())
                    wdw = float((W @ fit.D * W).sum())
                    row: dict[str, Any] = {
                        "block": index,
                        "layer": name,
                        "residual_share": (wdw / whw) ** 0.5 if whw > 0 else 0.0,
                        **dom,
                        **hfacts,
                        "fit": {},
                        "heldout": {},
                    }
                    new_weights = {}
                    for vname, spec in variants.items():
                        new = solve(W, fit, fit_raw.H, spec, args.weight_sparsity, args.damping)
                        new_weights[vname] = new
                        row["fit"][vname] = layer_errors(W, new, fit)[1]
                        row["heldout"][vname] = layer_errors(W, new, ho)[1]
                    layer_weight(module).copy_(new_weights[args.advance])
                    records.append(row)
                    best = min(row["heldout"], key=row["heldout"].get)
                    print(
                        f"[{time.monotonic() - tick:6.0f}s] b{index:2d} {name:18s} "
                        f"res {row['residual_share']:.3f} top1 {dom['top1_share']:.2f}"
                        f"@{dom['top1_position']} "
                        + " ".join(f"{v}={row['heldout'][v]:.4f}" for v in variants)
                        + f"  best {best}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            hooks = [
                m.register_forward_pre_hook(lambda _m, a: (topk_sparsify(a[0], p_x), *a[1:]))
                for m in linears.values()
            ]
            try:
                for b in range(len(compressed)):
                    compressed[b] = run_block(block, compressed[b], extras[b])
            finally:
                for h in hooks:
                    h.remove()
    summary = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "variants": variants,
        "layers": records,
    }
    totals = {v: sum(r["heldout"][v] for r in records) for v in variants}
    wins = {
        v: sum(1 for r in records if min(r["heldout"], key=r["heldout"].get) == v) for v in variants
    }
    summary["heldout_sum"] = totals
    summary["wins"] = wins
    print(json.dumps({"heldout_sum": totals, "wins": wins}))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
