"""A GPU check in at most 10 minutes on one device (issue 14 item 4).

1. **Parity** of a layer solve: DuoGPT and SparseGPT on one layer's random statistics, solved on
   the CPU in float64 (the reference) and in float32, and on the device in float32 and float64;
   the pruned weights, masks and layer objective of each compared with the reference (and the
   device's float32 solve with the CPU's).
2. **The default run on the device**: SmolLM2-135M with the ``duogpt prune`` defaults, through
   the product's own path (:func:`benchmarks.common.run_isolated`: the pipeline ended by the
   runner, in a fresh process so that the device's peak memory is this run's): perplexities,
   wall time, solve time and peak device memory.
3. **Layer-solve timings** of DuoGPT and SparseGPT on 4096x4096 and 11008x4096 weights
   (``[rows, cols]``) with statistics of matching size: a warm-up, then the median of
   ``--repeats`` (>= 3) calls timed between ``torch.cuda.synchronize()`` calls.
4. A Markdown result (``--out``) with the device, the torch and CUDA versions and every figure.

Each section checks the time spent against the budget (``--budget``, 10 minutes) and skips what
would not fit, saying so in the result. ``--quick`` uses 256-wide layers and the quick model of
:mod:`benchmarks.common`, so that the whole check runs on a CPU in about a minute (that is how
it is tested without a GPU).

    .venv/bin/python benchmarks/gpu_check.py --out results/gpu-check.md
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick --threads 1 --out /tmp/check.md

Exit codes: 0 every check passed (skips included), 1 a parity check failed or the run did not
finish, 2 bad input (CUDA asked for and absent, an unknown device).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import common
from solver.config import RunConfig
from solver.errors import InputError
from solver.io.system import cuda_available, resolve_device
from solver.math.activations import topk_sparsify
from solver.math.obc import layer_objective
from solver.math.stats import LayerStats
from solver.run import methods

BUDGET_S = 600.0
"""The whole check's time budget (seconds)."""

METHODS = ("duogpt", "sparsegpt")
"""The methods solved and timed, by their registry names."""

OBJECTIVE_TOLERANCE = 1e-4
"""A parity row passes when its layer objective is within this relative difference of the
reference's ..."""

MASK_TOLERANCE = 0.999
"""... and at least this fraction of its mask agrees with the reference's."""

ACT_SPARSITY = 0.5
"""Per-token top-k sparsity of the random inputs behind the statistics (the default run's)."""


@dataclass(frozen=True)
class Plan:
    """What one mode of the check measures.

    Attributes:
        parity_shapes: ``(rows, cols)`` of the layers solved for parity.
        parity_tokens: calibration tokens behind the parity statistics.
        timing_shapes: ``(rows, cols)`` of the timed layers.
        timing_tokens: calibration tokens behind the timing statistics.
        model_min_s: the default run is skipped when fewer seconds than this are left.
        timing_reserve_s: seconds kept for the timings when the default run is given its limit.
    """

    parity_shapes: tuple[tuple[int, int], ...]
    parity_tokens: int
    timing_shapes: tuple[tuple[int, int], ...]
    timing_tokens: int
    model_min_s: float
    timing_reserve_s: float


FULL_PLAN = Plan(
    parity_shapes=((1536, 576), (576, 1536)),  # SmolLM2-135M's MLP up/gate and down layers
    parity_tokens=2048,
    timing_shapes=((4096, 4096), (11008, 4096)),  # a 7B model's attention and MLP up layers
    timing_tokens=8192,
    model_min_s=120.0,
    timing_reserve_s=180.0,
)

QUICK_PLAN = Plan(
    parity_shapes=((256, 256),),
    parity_tokens=1024,
    timing_shapes=((256, 256), (688, 256)),  # the full shapes / 16
    timing_tokens=1024,
    model_min_s=10.0,
    timing_reserve_s=10.0,
)


# --------------------------------------------------------------------- budget


@dataclass
class Budget:
    """The check's clock and the notes about what did not fit.

    Attributes:
        seconds: the whole check's budget.
        tick: ``time.monotonic()`` at the start.
        notes: one line per thing skipped or cut short.
    """

    seconds: float
    tick: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)

    @property
    def spent(self) -> float:
        """Seconds since the start."""
        return time.monotonic() - self.tick

    @property
    def left(self) -> float:
        """Seconds left (negative once overrun)."""
        return self.seconds - self.spent

    def skip(self, what: str, needed: float | None = None) -> None:
        """Note that ``what`` was skipped (``needed``: the estimate that did not fit)."""
        estimate = f"needs ~{needed:.0f} s, " if needed is not None else ""
        note = f"{what}: skipped ({estimate}{max(self.left, 0):.0f} s of the budget left)"
        self.notes.append(note)
        say(note)


def say(text: str) -> None:
    """A progress line on stderr."""
    print(f"gpu_check: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- layers


def random_stats(
    k: int, tokens: int, *, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> LayerStats:
    """One layer's statistics from random inputs: dense ``X~`` with per-channel scales, and its
    per-token top-k sparse version ``X^`` (so ``H``, ``G`` and ``g`` all carry signal)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    scales = torch.rand(k, generator=gen, device=device, dtype=dtype) * 2
    x_dense = torch.randn(tokens, k, generator=gen, device=device, dtype=dtype) * scales
    stats = LayerStats.empty(k, device=device, dtype=dtype)
    stats.add(topk_sparsify(x_dense, ACT_SPARSITY), x_dense)
    return stats


def stats_as(stats: LayerStats, device: torch.device, dtype: torch.dtype) -> LayerStats:
    """``stats`` with its sums on ``device`` in ``dtype`` (the counts kept)."""
    return replace(
        stats,
        H_sum=stats.H_sum.to(device=device, dtype=dtype),
        G_sum=stats.G_sum.to(device=device, dtype=dtype),
        D_sum=stats.D_sum.to(device=device, dtype=dtype),
    )


def solve(method: str, weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """Prune ``weight`` with ``method``'s registry solve and the run defaults, as
    :func:`solver.run.layers.solve_layer` calls it (no held-out alpha selection)."""
    return methods.get(method).solve(weight, stats, RunConfig(), None).weight


def defaults(run: bool = False) -> str:
    """The run defaults that shape a layer solve (``run``: the whole run's), as text."""
    config = RunConfig()
    text = (
        f"W{config.weight_sparsity:.0%} {config.pattern}, block {config.block_size}, damping "
        f"{config.damping:g}, DuoGPT alpha {config.alpha:g}"
    )
    if run:
        text = f"{config.method}, X{config.act_sparsity:.0%} {config.act_rule}, " + text
    return text


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------- 1. parity


@dataclass(frozen=True)
class Agreement:
    """One solve compared with a reference solve of the same layer.

    Attributes:
        shape: ``rows x cols``.
        method: the registry name.
        solve: which solve (``cpu float32``, ``cuda float32`` ...).
        reference: which solve it is compared with.
        mask_agreement: fraction of weights pruned in both or kept in both.
        max_rel_diff: ``max |W' - W'_ref| / max |W'_ref|``.
        fro_rel_diff: ``||W' - W'_ref|| / ||W'_ref||`` (Frobenius).
        objective: the layer objective of this solve (float64, from the float64 statistics).
        objective_rel_diff: its relative difference from the reference's objective.
        seconds: the solve's wall seconds (a first call on the device includes its warm-up);
            they size the timings' first estimate.
    """

    shape: str
    method: str
    solve: str
    reference: str
    mask_agreement: float
    max_rel_diff: float
    fro_rel_diff: float
    objective: float
    objective_rel_diff: float
    seconds: float = math.nan

    @property
    def passed(self) -> bool:
        """Objective within :data:`OBJECTIVE_TOLERANCE` and mask within
        :data:`MASK_TOLERANCE` of the reference."""
        return (
            self.objective_rel_diff <= OBJECTIVE_TOLERANCE and self.mask_agreement >= MASK_TOLERANCE
        )


def compare(
    label: tuple[str, str, str, str],
    weight: torch.Tensor,
    pruned: torch.Tensor,
    reference: torch.Tensor,
    stats: LayerStats,
    seconds: float = math.nan,
) -> Agreement:
    """``pruned`` against ``reference`` (both solves of ``weight``; float64 CPU ``stats``;
    ``seconds``: how long ``pruned`` took)."""
    new = pruned.detach().to(device="cpu", dtype=torch.float64)
    ref = reference.detach().to(device="cpu", dtype=torch.float64)
    diff = (new - ref).abs()
    scale = float(ref.abs().max()) or 1.0
    objective = layer_objective(weight, new, stats)
    ref_objective = layer_objective(weight, ref, stats)
    return Agreement(
        *label,
        mask_agreement=float(((new == 0) == (ref == 0)).double().mean()),
        max_rel_diff=float(diff.max()) / scale,
        fro_rel_diff=float(diff.norm()) / (float(ref.norm()) or 1.0),
        objective=objective,
        objective_rel_diff=abs(objective - ref_objective) / (abs(ref_objective) or 1.0),
        seconds=seconds,
    )


def parity(shape: tuple[int, int], tokens: int, device: torch.device) -> list[Agreement]:
    """Both methods on one random layer: every solve against the CPU float64 one, and the
    device's float32 solve against the CPU's."""
    rows, cols = shape
    cpu = torch.device("cpu")
    stats64 = random_stats(cols, tokens, device=cpu, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    weight64 = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    solves: dict[str, tuple[torch.Tensor, LayerStats]] = {
        "cpu float32": (weight64.float(), stats_as(stats64, cpu, torch.float32)),
        f"device float32 ({device})": (
            weight64.to(device=device, dtype=torch.float32),
            stats_as(stats64, device, torch.float32),
        ),
        f"device float64 ({device})": (
            weight64.to(device=device),
            stats_as(stats64, device, torch.float64),
        ),
    }
    out = []
    name = f"{rows}x{cols}"
    for method in METHODS:
        reference = solve(method, weight64, stats64)
        found: dict[str, torch.Tensor] = {}
        for label, (w, s) in solves.items():
            tick = time.perf_counter()
            found[label] = solve(method, w, s)
            synchronize(w.device)
            seconds = time.perf_counter() - tick
            out.append(
                compare(
                    (name, method, label, "cpu float64"),
                    weight64,
                    found[label],
                    reference,
                    stats64,
                    seconds,
                )
            )
        device32 = f"device float32 ({device})"
        out.append(
            compare(
                (name, method, device32, "cpu float32"),
                weight64,
                found[device32],
                found["cpu float32"],
                stats64,
            )
        )
    return out


def parity_section(
    plan: Plan, device: torch.device, budget: Budget
) -> tuple[str, bool, list[Agreement]]:
    """The parity table, whether every row passed, and the rows."""
    found: list[Agreement] = []
    for shape in plan.parity_shapes:
        if found and budget.left < budget.seconds / 2:  # keep half for the rest
            budget.skip(f"parity {shape[0]}x{shape[1]}")
            continue
        say(f"parity {shape[0]}x{shape[1]} on {device}")
        found += parity(shape, plan.parity_tokens, device)
    header = (
        "layer",
        "method",
        "solve",
        "compared with",
        "mask agreement",
        "max rel. diff",
        "rel. Frobenius diff",
        "objective",
        "objective rel. diff",
        "verdict",
    )
    rows = [
        (
            a.shape,
            a.method,
            a.solve,
            a.reference,
            f"{a.mask_agreement:.4%}",
            f"{a.max_rel_diff:.2e}",
            f"{a.fro_rel_diff:.2e}",
            f"{a.objective:.6e}",
            f"{a.objective_rel_diff:.2e}",
            "pass" if a.passed else "FAIL",
        )
        for a in found
    ]
    passed = all(a.passed for a in found)
    worst = max((a.objective_rel_diff for a in found), default=math.nan)
    note = (
        f"Random statistics of {plan.parity_tokens} tokens (dense inputs with per-channel "
        f"scales, and their {ACT_SPARSITY:.0%} per-token top-k sparse version for `H`, `G` and "
        f"`g`), a random weight; the run defaults ({defaults()}) through the methods registry. "
        "A row passes when its layer "
        f"objective is within {OBJECTIVE_TOLERANCE:g} (relative) of the reference's and at "
        f"least {MASK_TOLERANCE:.1%} of its mask agrees. A weight on a near tie can be pruned in "
        "one precision and kept in the other; the rest of its row then absorbs a different "
        "update, so the max relative difference of a row with a flipped mask entry is far "
        "larger than the rounding (the objective, which is what the solve minimises, barely "
        f"moves). Largest objective difference: {worst:.2e}; "
        f"{'every row passed' if passed else 'SOME ROWS FAILED'}."
    )
    text = "## 1. Layer-solve parity\n\n" + common.table(header, rows, "llllrrrrrl") + "\n\n" + note
    return text, passed, found


# --------------------------------------------------------------------- 2. the default run


def model_section(
    plan: Plan, base: dict[str, Any], budget: Budget, in_process: bool
) -> tuple[str, bool]:
    """The default run on the device: its figures, and whether it finished."""
    title = "## 2. The default run on the device\n\n"
    limit = budget.left - plan.timing_reserve_s
    if limit < plan.model_min_s:
        budget.skip("the default run", plan.model_min_s)
        return title + "Skipped: it would not fit in the time budget.", True
    say(f"the default run on {base['device']} (limit {limit:.0f} s)")
    tick = time.monotonic()
    device = torch.device(str(base["device"]))
    if in_process and device.type == "cuda":  # the run's peak, not the parity section's
        torch.cuda.reset_peak_memory_stats(device)
    try:
        summary = (
            common.run_in_process(base) if in_process else common.run_isolated(base, timeout=limit)
        )
    except subprocess.TimeoutExpired:
        summary = {"status": "timed out", "error": f"stopped after {limit:.0f} s (the budget)"}
    summary.setdefault("wall_s", round(time.monotonic() - tick, 2))
    finished = summary.get("status") == "finished"
    timings = summary.get("timings", {})
    peak_label = (
        "peak device memory MB (allocator)"
        if str(base["device"]).startswith("cuda")
        else "peak memory MB (process RSS)"
    )
    figures: list[tuple[str, str]] = [("status", str(summary.get("status")))]
    if summary.get("error"):
        figures.append(("error", str(summary["error"]).replace("|", "/")))
    figures += [
        (f"perplexity ({key[4:]})", common.fmt(value))
        for key, value in summary.items()
        if key.startswith("ppl_")
    ]
    figures += [
        ("weight sparsity", common.pct(summary.get("weight_sparsity"))),
        ("activation sparsity", common.pct(summary.get("act_sparsity"))),
        ("wall s", common.fmt(summary.get("wall_s"), 1)),
        ("run s", common.fmt(summary.get("seconds"), 1)),
        *((f"{part} s", common.fmt(value, 1)) for part, value in timings.items()),
        ("solve s (sum over layers)", common.fmt(summary.get("solve_s"), 1)),
        ("layers solved", common.fmt(summary.get("layers"))),
        (peak_label, common.fmt(summary.get("peak_rss_mb"), 0)),
    ]
    how = "in this process" if in_process else "in a fresh process"
    note = (
        f"The `duogpt prune` defaults ({defaults(run=True)}) on `{base['device']}`, {how}, "
        "through `benchmarks.common` (the pipeline ended by the runner, no files kept). The "
        "peak is the run's own figure from its finished event: the device allocator's peak on "
        "CUDA, the process's peak RSS on the CPU."
    )
    table = common.table(("figure", "value"), figures, "lr")
    return title + table + "\n\n" + note, finished


# --------------------------------------------------------------------- 3. timings


@dataclass(frozen=True)
class Timing:
    """The timed solves of one method on one layer shape.

    Attributes:
        shape: ``(rows, cols)``.
        method: the registry name.
        seconds: each timed call's wall seconds (after the warm-up); empty when skipped.
        warmup: the warm-up call's seconds (None when skipped).
        peak_mb: the device allocator's peak during one call, above what was allocated before
            it (None on the CPU).
    """

    shape: tuple[int, int]
    method: str
    seconds: tuple[float, ...] = ()
    warmup: float | None = None
    peak_mb: float | None = None

    @property
    def median(self) -> float | None:
        """The median timed call, in seconds."""
        return statistics.median(self.seconds) if self.seconds else None


def timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def solve_cost(shape: tuple[int, int]) -> float:
    """The solve's work on a ``(rows, cols)`` layer, up to a constant: the sweep's updates
    (``rows x cols^2``) and the factorisation (``cols^3``)."""
    rows, cols = shape
    return float(rows * cols**2 + cols**3)


def estimate(
    known: Sequence[tuple[tuple[int, int], float]], shape: tuple[int, int]
) -> float | None:
    """One solve's seconds on ``shape``, scaled from measured ``(shape, seconds)`` solves of
    the same method on the same device (the smallest estimate; None without any)."""
    guesses = [s * solve_cost(shape) / solve_cost(k) for k, s in known if math.isfinite(s)]
    return min(guesses, default=None)


def time_solve(
    shape: tuple[int, int],
    method: str,
    stats: LayerStats | None,
    device: torch.device,
    repeats: int,
    budget: Budget,
    guess: float | None,
) -> Timing:
    """A warm-up and up to ``repeats`` timed solves, as far as the budget allows (``guess``:
    one solve's estimated seconds; skipped when not even the warm-up and one call fit, or
    without ``stats``)."""
    rows, cols = shape
    what = f"{method} {rows}x{cols}"
    if guess is not None and budget.left < 2 * guess:
        budget.skip(f"timing {what}", 2 * guess)
        return Timing(shape, method)
    if budget.left <= 0 or stats is None:
        budget.skip(f"timing {what}")
        return Timing(shape, method)
    gen = torch.Generator(device=device).manual_seed(1)
    weight = torch.randn(rows, cols, generator=gen, device=device)

    def call() -> object:
        return solve(method, weight, stats)

    say(f"timing {what}")
    peak = None
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    warmup = timed_call(call, device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    fit = min(repeats, int(max(budget.left, 0) // max(warmup, 1e-9)))
    if fit < repeats:
        budget.notes.append(
            f"timing {what}: {fit} of {repeats} timed calls fit in the budget "
            f"(one takes ~{warmup:.1f} s)"
        )
    seconds = tuple(timed_call(call, device) for _ in range(fit))
    return Timing(shape, method, seconds, warmup, peak)


def timing_section(
    plan: Plan,
    device: torch.device,
    repeats: int,
    budget: Budget,
    parity_rows: Sequence[Agreement] = (),
) -> tuple[str, list[Timing]]:
    """The timing table (every method on every shape; the first estimates come from the
    device's float32 parity solves)."""
    found: list[Timing] = []
    known: dict[str, list[tuple[tuple[int, int], float]]] = {m: [] for m in METHODS}
    for row in parity_rows:
        if row.solve.startswith("device float32") and row.reference == "cpu float64":
            rows, cols = (int(v) for v in row.shape.split("x"))
            known[row.method].append(((rows, cols), row.seconds))
    stats: dict[int, LayerStats] = {}  # by cols: the shapes share their statistics
    for rows, cols in plan.timing_shapes:
        for method in METHODS:
            guess = estimate(known[method], (rows, cols))
            fits = budget.left > 0 and (guess is None or budget.left >= 2 * guess)
            if fits and cols not in stats:
                stats[cols] = random_stats(
                    cols, plan.timing_tokens, device=device, dtype=torch.float32
                )
            timing = time_solve(
                (rows, cols), method, stats.get(cols), device, repeats, budget, guess
            )
            found.append(timing)
            if timing.median is not None:
                known[method] = [((rows, cols), timing.median)]  # a timed solve is better
    stats.clear()
    by = {(t.shape, t.method): t for t in found}
    header = (
        "layer (rows x cols)",
        "method",
        "median ms",
        "min ms",
        "max ms",
        "timed calls",
        "warm-up ms",
        "peak device MB",
        "DuoGPT / SparseGPT",
    )
    table_rows = []
    for t in found:
        other = by.get((t.shape, "sparsegpt"))
        ratio = (
            f"{t.median / other.median:.2f}x"
            if t.method == "duogpt" and t.median and other is not None and other.median
            else ""
        )
        table_rows.append(
            (
                f"{t.shape[0]}x{t.shape[1]}",
                t.method,
                _ms(t.median),
                _ms(min(t.seconds) if t.seconds else None),
                _ms(max(t.seconds) if t.seconds else None),
                str(len(t.seconds)) if t.seconds else "skipped",
                _ms(t.warmup),
                common.fmt(t.peak_mb, 0),
                ratio,
            )
        )
    note = (
        f"Float32 statistics of {plan.timing_tokens} random tokens ({ACT_SPARSITY:.0%} per-token "
        "top-k inputs, dense inputs for `G` and `g`) on the device, a random float32 weight, the "
        "run defaults through the methods registry. One warm-up call, then the median of "
        f"{repeats} calls, each timed between `torch.cuda.synchronize()` calls on CUDA. Peak "
        "device MB: the allocator's peak during the warm-up call above what was allocated "
        "before it (the solve's workspace). Issue 14's target: DuoGPT <= 1.2x SparseGPT."
    )
    text = (
        "## 3. Layer-solve timings\n\n"
        + common.table(header, table_rows, "llrrrrrrr")
        + "\n\n"
        + note
    )
    return text, found


def _ms(seconds: float | None) -> str:
    return common.fmt(None if seconds is None else seconds * 1e3, 1)


# --------------------------------------------------------------------- the device


def device_section(device: torch.device) -> str:
    """The device's name and memory, and the torch, CUDA and cuDNN versions."""
    rows: list[tuple[str, str]] = [("device", str(device))]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        rows += [
            ("name", torch.cuda.get_device_name(device)),
            ("memory GiB", f"{props.total_memory / 2**30:.1f}"),
            ("compute capability", f"{props.major}.{props.minor}"),
            ("multiprocessors", str(props.multi_processor_count)),
        ]
    else:
        rows.append(("name", "the CPU (no accelerator used)"))
    rows += [
        ("torch", torch.__version__),
        ("CUDA (torch built with)", str(torch.version.cuda)),
        ("CUDA available", str(cuda_available())),
        ("torch CPU threads", str(torch.get_num_threads())),
    ]
    return "## Device\n\n" + common.table(("what", "value"), rows, "ll")


def budget_section(budget: Budget) -> str:
    """What was skipped or cut short, and the time spent against the budget."""
    lines = [
        "## Budget",
        "",
        f"{budget.spent:.0f} s of the {budget.seconds:.0f} s budget were spent.",
    ]
    if budget.notes:
        lines += ["", *(f"- {note}" for note in budget.notes)]
    else:
        lines += ["", "Nothing was skipped."]
    return "\n".join(lines)


# --------------------------------------------------------------------- main


def arguments() -> argparse.ArgumentParser:
    """The check's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda", help="cuda, cuda:N or cpu (default cuda; refused without it)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="256-wide layers and the quick model of benchmarks.common (about a minute on a CPU)",
    )
    parser.add_argument("--skip-model", action="store_true", help="no default run (section 2)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown result here")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads here and in the run (0: default)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed calls per solve after the warm-up (>= 3)"
    )
    parser.add_argument(
        "--budget", type=float, default=BUDGET_S, help="time budget in seconds (default 600)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the default run in this process (no fresh process, no hard time limit)",
    )
    return parser


def check_device(spec: str) -> torch.device:
    """The device to check on.

    Raises:
        InputError: CUDA was asked for and is absent, the device index does not exist, or the
            device is unknown.
    """
    if spec.startswith("cuda") and not cuda_available():
        raise InputError(
            f"--device {spec} was asked for but CUDA is not available on this machine: run the "
            "check on a GPU machine, or try it here with --device cpu --quick"
        )
    if spec == "auto":
        raise InputError("--device auto is not a check: use --device cuda (or cpu)")
    device = resolve_device(spec)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise InputError(
            f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use --device cuda (the first) or cuda:N with N below that"
        )
    return device


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; the exit code (see the module docstring)."""
    args = arguments().parse_args(argv)
    try:
        device = check_device(args.device)
        if args.repeats < 3:
            raise InputError(f"--repeats must be at least 3, got {args.repeats}")
    except InputError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    if args.threads:
        common.set_threads(args.threads)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    budget = Budget(args.budget)
    session = common.Session(args.out)
    sections = [device_section(device)]

    parity_text, parity_ok, parity_rows = parity_section(plan, device, budget)
    sections.append(parity_text)

    run_ok = True
    protocol_line = (
        "Layer solves on random statistics (see sections 1 and 3); "
        f"{'quick' if args.quick else 'full'} plan, budget {budget.seconds:.0f} s."
    )
    if args.skip_model:
        sections.append("## 2. The default run on the device\n\nSkipped (`--skip-model`).")
    else:
        base = {**common.protocol(args.quick), "device": args.device}
        model_text, run_ok = model_section(plan, base, budget, args.in_process)
        sections.append(model_text)
        protocol_line = common.protocol_text(base, args.quick) + " " + protocol_line

    timing_text, _ = timing_section(plan, device, args.repeats, budget, parity_rows)
    sections.append(timing_text)
    sections.append(budget_section(budget))
    session.publish("GPU check", sections, protocol_line=protocol_line)
    return 0 if parity_ok and run_ok else 1


if __name__ == "__main__":
    sys.exit(main())
