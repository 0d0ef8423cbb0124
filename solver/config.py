"""The run configuration: every knob of a pruning run, declared once, with its validation.

One frozen dataclass that the CLI, the TUI's setup screen and the run store share. Every option
that ALGORITHM.md marks **[choice]** is a field here (alpha, damping, act-order, residual variant,
block size, activation rule, true-sequential). Each field is declared with
:func:`solver.options.option`: its default, help, group, and its flag, choices, bounds and place
on ``duogpt eval`` and the setup form where it has them. :data:`OPTIONS` is that registry;
:meth:`RunConfig.validate`, ``duogpt prune``/``eval``, ``duogpt-tui`` and the setup form all derive
from it, so adding an option is one edit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from solver.errors import InputError
from solver.options import Bounds, FormField, Option, Surface, option, resolve_options
from solver.options import unknown_choice as _unknown_choice
from solver.run import methods as _methods

METHODS = _methods.NAMES
"""The method names, in the registry's order (:mod:`solver.run.methods`)."""

ACT_RULES = ("topk", "threshold")
RESIDUAL_VARIANTS = ("original", "pruned")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
DAMPING_RULES = ("mean", "median", "channel")
MASK_SCOPES = ("block", "row")
ALPHA_SELECTIONS = ("fixed", "heldout")
RESIDUAL_SOURCES = ("dense", "local", "upstream", "sparse-dense")
"""What DuoGPT's residual target is (:mod:`solver.run.layers`)."""
EVAL_PLACEMENTS = ("spread", "first")
OFFLOAD_MODES = ("none", "cpu", "disk", "auto")
"""Where the weights wait while one decoder block is on the device (:mod:`solver.run.offload`)."""


def check_tasks(tasks: object) -> None:
    """A comma-separated list of task names (whether each exists is checked at pre-flight).

    Raises:
        InputError: not a string, or an empty name between commas.
    """
    if not isinstance(tasks, str):
        raise InputError(f"--tasks must be comma-separated task names, got {tasks!r}")
    names = [name.strip() for name in tasks.split(",")]
    if tasks.strip() and not all(names):
        raise InputError(f"--tasks has an empty name in {tasks!r}: use NAME[,NAME...]")


FRACTION = Bounds(0, 1)
"""``[0, 1)``."""


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """Parse ``unstructured`` (-> None) or ``N:M`` (-> (N, M), N zeros in every M weights).

    Raises:
        InputError: the pattern is neither.
    """
    text = str(pattern).strip().lower()
    if text in ("unstructured", "", "none"):
        return None
    parts = text.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        n, m = int(parts[0]), int(parts[1])
        if 0 < n < m:
            return n, m
    raise InputError(
        f"malformed pattern {pattern!r}: use 'unstructured' or N:M with 0 < N < M, e.g. 2:4"
    )


def check_device(device: object) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA is there is checked at pre-flight).

    Raises:
        InputError: anything else.
    """
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise InputError(_unknown_choice("device", device, DEVICES))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a pruning run (defaults finish in minutes on a 2-core CPU)."""

    model: str = option(
        "smollm2-135m",
        "Built-in name, local HF model folder, .gguf file or hub id.",
        "data",
        form=FormField(1, "Model", "folder, file or hub id", picker="models"),
    )
    calib: str = option(
        "sotu",
        "Calibration text: built-in, .txt/.jsonl file, wikitext2 or c4.",
        "data",
        form=FormField(2, "Calibration text", ".txt / .jsonl file", picker="texts"),
    )
    eval: str = option(
        "moby-dick",
        "Evaluation text (same forms as --calib).",
        "data",
        eval_help="Evaluation text (built-in, file, wikitext2, c4).",
        form=FormField(3, "Evaluation text", ".txt / .jsonl file", picker="texts"),
    )
    method: str = option(
        "duogpt",
        "Pruning method: {choices}.",
        "sparsity",
        choices=METHODS,
        form=FormField(
            4,
            "Method",
            choice_labels=(
                "duogpt (dual-sparse OBS)",
                "sparsegpt",
                "wanda",
                "magnitude",
                "dense (no weight pruning)",
            ),
        ),
    )
    weight_sparsity: float = option(
        0.5,
        "Target fraction of zero weights, in [0, 1).",
        "sparsity",
        bounds=FRACTION,
        form=FormField(6, "Weight sparsity", "fraction of weights pruned, e.g. 0.5"),
    )
    pattern: str = option(
        "unstructured",
        "'unstructured' or N:M (N zeros in every M weights), e.g. 2:4.",
        "sparsity",
        check=parse_pattern,
        form=FormField(
            5,
            "Weight pattern",
            "unstructured or N:M, e.g. 2:4",
            suggestions=("unstructured", "2:4", "4:8"),
        ),
    )
    act_sparsity: float = option(
        0.5,
        "Fraction of each layer's input zeroed; 0 disables.",
        "sparsity",
        bounds=FRACTION,
        eval_help="Activation sparsity (top-k) applied during evaluation.",
        form=FormField(7, "Activation sparsity", "fraction of inputs zeroed per token; 0 = off"),
    )
    act_rule: str = option(
        "topk",
        "Activation sparsity rule: {choices} (threshold: one magnitude threshold per layer, "
        "fitted on the calibration text with every upstream layer's activation sparsity on).",
        "sparsity",
        choices=ACT_RULES,
        noun="activation rule",
        form=FormField(
            8, "Activation rule", choice_labels=("topk (per token)", "threshold (calibrated)")
        ),
    )
    nsamples: int = option(
        16,
        "Calibration sequences.",
        "calibration",
        bounds=Bounds(1),
        form=FormField(11, "Calibration samples", "sequences"),
    )
    seqlen: int = option(
        256,
        "Tokens per calibration sequence and eval window.",
        "calibration",
        bounds=Bounds(8),
        eval_help="Tokens per window.",
        form=FormField(12, "Sequence length", "tokens per sample and per evaluation window"),
    )
    eval_windows: int = option(
        16,
        "Evaluation windows (of --eval-seqlen tokens); 0 skips.",
        "evaluation",
        bounds=Bounds(0),
        eval_help="Non-overlapping windows of seqlen tokens.",
        form=FormField(13, "Evaluation windows", "0 skips perplexity"),
    )
    eval_seqlen: int = option(
        0, "Tokens per evaluation window; 0 means --seqlen.", "evaluation", bounds=Bounds(0)
    )
    eval_placement: str = option(
        "spread",
        "Where the evaluation windows lie in the held-out text: {choices} (spread: evenly over "
        "all of it; first: its first windows).",
        "evaluation",
        choices=EVAL_PLACEMENTS,
        noun="evaluation placement",
        eval_help="Where the windows lie: {choices} (spread: evenly over the held-out text).",
    )
    tasks: str = option(
        "",
        "Zero-shot tasks (comma-separated; `duogpt eval --list-tasks`) run on the dense and "
        "the pruned model.",
        "evaluation",
        check=check_tasks,
        eval_help="Zero-shot tasks to run instead of perplexity (comma-separated; see "
        "--list-tasks).",
    )
    task_limit: int = option(
        0,
        "Examples per zero-shot task; 0 = each task's default.",
        "evaluation",
        flag="--limit",
        bounds=Bounds(0),
        eval_help="Examples per task (default: each task's own limit).",
    )
    eval_dense: bool = option(
        True, "Also measure the dense model (with and without activation sparsity).", "evaluation"
    )
    seed: int = option(
        0,
        "Random seed.",
        "run",
        form=FormField(14, "Seed", "seeds sampling and everything random"),
    )
    device: str = option(
        "auto",
        "Device: {choices} (auto uses CUDA when present).",
        "machine",
        choices=DEVICES,
        check=check_device,
        eval_help="Device: {choices}.",
        form=FormField(15, "Device", picker="devices"),
    )
    dtype: str = option(
        "float32",
        "Model dtype: {choices} (the solver's math is float32).",
        "machine",
        choices=DTYPES,
        form=FormField(16, "Model dtype", choice_labels=DTYPES),
    )
    alpha: float = option(
        0.125,
        "DuoGPT residual scale; 0 = sparse-input SparseGPT.",
        "solver",
        bounds=Bounds(0),
        form=FormField(9, "Alpha (DuoGPT)", "residual scale; 0 = SparseGPT on sparse inputs"),
    )
    alpha_select: str = option(
        "fixed",
        "DuoGPT alpha per layer: fixed (--alpha everywhere) or heldout (the best of 0, "
        "alpha/2 and alpha on held-out calibration sequences).",
        "solver",
        choices=ALPHA_SELECTIONS,
        noun="alpha selection",
    )
    residual_source: str = option(
        "dense",
        "What DuoGPT's residual corrects: dense (the dense model's input X~: activation "
        "sparsity and every upstream pruning error, ALGORITHM.md section 3), local (only this "
        "layer's own activation sparsity: the compressed stream's input before its top-k), "
        "upstream (only the upstream error: X^ + X~ - X, where X is the compressed stream's "
        "input before its top-k) or sparse-dense (X~ with this layer's activation sparsity: the "
        "dense model with activation sparsity as the teacher).",
        "solver",
        choices=RESIDUAL_SOURCES,
        noun="residual source",
    )
    channel_alpha: float = option(
        0.0,
        "DuoGPT's per-channel residual: scale each input column of W by 1 + channel_alpha x "
        "G_jj / H_jj (the channel's own least-squares gain, ridged by --residual-damping) "
        "before the solve; --alpha then fits what is left. 0 = off.",
        "solver",
        bounds=Bounds(0),
    )
    damping: float = option(
        0.3,
        "Relative Hessian damping (0.3 of each channel's own H_jj by default; SparseGPT's "
        "published rule is --damping-rule mean --damping 0.01).",
        "solver",
        bounds=Bounds(0, 10, low_open=True),
        form=FormField(10, "Damping", "relative Hessian damping, e.g. 0.3"),
    )
    residual_damping: float = option(
        1.0,
        "Relative damping of DuoGPT's residual terms (a ridge); 0 = --damping.",
        "solver",
        bounds=Bounds(0, 1000),
    )
    damping_rule: str = option(
        "channel",
        "What --damping is relative to: {choices} of diag(H) (channel: each input's own "
        "H_jj, so that a few massive channels do not set every other channel's damping).",
        "solver",
        choices=DAMPING_RULES,
    )
    mask_scope: str = option(
        "row",
        "OBS masks compare scores in each column block or each row: {choices}.",
        "solver",
        choices=MASK_SCOPES,
    )
    token_clip: float = option(
        4.0,
        "Cap each calibration token's norm at this many times the median; 0 = off.",
        "calibration",
        bounds=Bounds(0),
    )
    block_size: int = option(128, "Columns per lazy-update block.", "solver", bounds=Bounds(1))
    act_order: bool = option(False, "Process columns by descending Hessian diagonal.", "solver")
    residual_variant: str = option(
        "original",
        "Lazy residual update: {choices}.",
        "solver",
        choices=RESIDUAL_VARIANTS,
    )
    true_sequential: bool = option(
        True,
        "Prune [qkv] -> [o] -> [gate, up] -> [down] in order, or a block at once.",
        "solver",
        off_flag="--all-at-once",
    )
    batch_size: int = option(8, "Sequences per forward pass.", "machine", bounds=Bounds(1))
    offload: str = option(
        "none",
        "Block offload: {choices} (none: blocks and the calibration streams on the device, the "
        "whole model there to be evaluated; cpu: the weights and streams stay in host memory "
        "and one block at a time moves to the device; disk: as cpu, with the blocks' weights "
        "memory-mapped from files in the run directory's offload/ folder instead of held in "
        "host memory (loading still reads the whole model once); auto: cpu when the device "
        "looks too small for none, never disk).",
        "machine",
        choices=OFFLOAD_MODES,
        noun="offload mode",
    )
    nproc: int = option(
        1,
        "Processes (ranks) that share the calibration: data parallel with torch.distributed, "
        "gloo on CPU, NCCL on CUDA. When a rank dies the others are stopped at once and the "
        "run fails (continue it with --resume); a rank that hangs fails the run after 600 s.",
        "machine",
        bounds=Bounds(1),
        form=FormField(18, "Ranks", "processes sharing the calibration"),
    )
    proxy_every: int = option(
        0,
        "Proxy perplexity every N blocks; 0 = off.",
        "evaluation",
        bounds=Bounds(0),
        form=FormField(
            17,
            "Proxy perplexity",
            toggle=5,
            unit="blocks",
            hint="cheap perplexity during the run",
        ),
    )
    proxy_windows: int = option(
        4, "Windows for the proxy perplexity.", "evaluation", bounds=Bounds(1)
    )
    save_model: bool = option(True, "Save the pruned model into the run directory.", "output")
    checkpoints: bool = option(
        True,
        "Checkpoint after every block, so that --resume can continue the run.",
        "output",
    )
    keep_checkpoints: bool = option(False, "Keep the checkpoints once the run finished.", "output")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for an N:M pattern, ``None`` for unstructured."""
        return parse_pattern(self.pattern)

    @property
    def eval_len(self) -> int:
        """Tokens per evaluation window: ``eval_seqlen``, or ``seqlen`` when that is 0."""
        return self.eval_seqlen or self.seqlen

    @property
    def target_weight_sparsity(self) -> float:
        """The weight sparsity the pattern asks for (N/M for N:M; 0 for ``dense``)."""
        if self.method == "dense":
            return 0.0
        nm = self.nm
        return nm[0] / nm[1] if nm else self.weight_sparsity

    def validate(self) -> RunConfig:
        """Check every field against its option (choices, bounds, pattern); return self.

        Raises:
            InputError: one actionable line naming the first bad field (in field order).
        """
        for spec in OPTIONS:
            spec.validate(getattr(self, spec.name))
        return self


OPTIONS: tuple[Option, ...] = resolve_options(RunConfig)
"""The option registry: one :class:`~solver.options.Option` per field, in field order."""

OPTION: dict[str, Option] = {spec.name: spec for spec in OPTIONS}
"""The options by field name."""


def options_on(surface: Surface) -> tuple[Option, ...]:
    """The options shown on ``surface``, in field order."""
    return tuple(spec for spec in OPTIONS if surface in spec.surfaces)
