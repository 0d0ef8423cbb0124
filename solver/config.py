"""The run configuration: every knob of a pruning run, with its validation.

One frozen dataclass that the CLI, the TUI's setup screen and the run store share. Every option
that ALGORITHM.md marks **[choice]** is a field here (alpha, damping, act-order, residual variant,
block size, activation rule, true-sequential).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from solver.errors import InputError

METHODS = ("duogpt", "sparsegpt", "wanda", "magnitude", "dense")
ACT_RULES = ("topk", "threshold")
RESIDUAL_VARIANTS = ("original", "pruned")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
DAMPING_RULES = ("mean", "median", "channel")
MASK_SCOPES = ("block", "row")
ALPHA_SELECTIONS = ("fixed", "heldout")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a pruning run (defaults finish in minutes on a 2-core CPU)."""

    model: str = "smollm2-135m"  # built-in name, local HF dir, .gguf file or hub id
    calib: str = "sotu"  # built-in corpus, .txt/.jsonl file, or "wikitext2" / "c4"
    eval: str = "moby-dick"  # evaluation text, same forms as calib
    method: str = "duogpt"  # one of METHODS
    weight_sparsity: float = 0.5  # target fraction of zero weights (unstructured)
    pattern: str = "unstructured"  # "unstructured" or "N:M", e.g. "2:4" (N zeros in every M)
    act_sparsity: float = 0.5  # fraction of each linear layer's input zeroed per token; 0 = off
    act_rule: str = "topk"  # "topk" (per-token top-k) or "threshold" (calibrated, TEAL-style)
    nsamples: int = 16  # calibration sequences
    seqlen: int = 256  # tokens per calibration sequence (and per evaluation window)
    eval_windows: int = 16  # non-overlapping evaluation windows of eval_len tokens; 0 = skip
    eval_seqlen: int = 0  # tokens per evaluation window; 0 = the same as seqlen
    eval_dense: bool = True  # also measure the dense model (with and without activation sparsity)
    seed: int = 0  # seeds the calibration sampling and everything random
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    dtype: str = "float32"  # model dtype; the solver's math is float32 whatever this is
    alpha: float = 0.125  # DuoGPT residual scale; 0 = SparseGPT on sparse-input statistics
    alpha_select: str = "fixed"  # "heldout": per layer, the best of 0, alpha/2, alpha on held-out
    damping: float = 0.01  # relative Hessian damping (times the mean or median diagonal)
    residual_damping: float = 1.0  # damping of DuoGPT's residual terms (a ridge); 0 = as damping
    damping_rule: str = "mean"  # damping relative to diag(H)'s "mean", "median" or each "channel"
    mask_scope: str = "row"  # OBS masks compare scores in each "row" or each n x B "block"
    token_clip: float = 4.0  # cap each calibration token's norm at c x the median; 0 = off
    block_size: int = 128  # columns per lazy-update block
    act_order: bool = False  # process columns by descending Hessian diagonal
    residual_variant: str = "original"  # lazy residual uses pre-pruning ("original") or pruned
    true_sequential: bool = True  # prune [qkv] -> [o] -> [gate, up] -> [down] in order
    batch_size: int = 8  # calibration sequences per forward pass
    proxy_every: int = 0  # measure a cheap proxy perplexity every N blocks; 0 = off
    proxy_windows: int = 4  # windows for the proxy perplexity
    save_model: bool = True  # save the pruned model into the run directory
    checkpoints: bool = True  # checkpoint after every block into the run directory (--resume)
    keep_checkpoints: bool = False  # keep the checkpoints after the run has finished

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
        """Check every field; return self.

        Raises:
            InputError: one actionable line naming the bad field.
        """
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        _check_fraction("weight sparsity", self.weight_sparsity, "--weight-sparsity")
        _check_fraction("activation sparsity", self.act_sparsity, "--act-sparsity")
        parse_pattern(self.pattern)
        if self.act_rule not in ACT_RULES:
            raise InputError(f"unknown activation rule {self.act_rule!r}: use topk or threshold")
        if self.residual_variant not in RESIDUAL_VARIANTS:
            raise InputError(
                f"unknown residual variant {self.residual_variant!r}: use original or pruned"
            )
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}: use {', '.join(DTYPES)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise InputError(f"unknown device {self.device!r}: use auto, cpu or cuda")
        for name, value, low in (
            ("nsamples", self.nsamples, 1),
            ("seqlen", self.seqlen, 8),
            ("eval_windows", self.eval_windows, 0),
            ("eval_seqlen", self.eval_seqlen, 0),
            ("block_size", self.block_size, 1),
            ("batch_size", self.batch_size, 1),
            ("proxy_every", self.proxy_every, 0),
            ("proxy_windows", self.proxy_windows, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                flag = "--" + name.replace("_", "-")
                raise InputError(f"{flag} must be an integer >= {low}, got {value!r}")
        if not _finite(self.alpha) or self.alpha < 0:
            raise InputError(f"--alpha must be a number >= 0, got {self.alpha!r}")
        if self.damping_rule not in DAMPING_RULES:
            raise InputError(
                f"unknown damping rule {self.damping_rule!r}: use {', '.join(DAMPING_RULES)}"
            )
        if self.alpha_select not in ALPHA_SELECTIONS:
            raise InputError(f"unknown alpha selection {self.alpha_select!r}: use fixed or heldout")
        if self.mask_scope not in MASK_SCOPES:
            raise InputError(f"unknown mask scope {self.mask_scope!r}: use block or row")
        if not _finite(self.residual_damping) or not 0 <= self.residual_damping < 1000:
            raise InputError(
                f"--residual-damping must be a number in [0, 1000), got {self.residual_damping!r}"
            )
        if not _finite(self.token_clip) or self.token_clip < 0:
            raise InputError(f"--token-clip must be a number >= 0, got {self.token_clip!r}")
        if not _finite(self.damping) or not 0 < self.damping < 10:
            raise InputError(f"--damping must be a number in (0, 10), got {self.damping!r}")
        return self


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_fraction(what: str, value: object, flag: str) -> None:
    if not _finite(value) or not 0 <= float(value) < 1:  # type: ignore[arg-type]
        raise InputError(f"{flag} must be a number in [0, 1), got {value!r} ({what})")


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
