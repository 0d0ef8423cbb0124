"""Perplexity on non-overlapping token windows (ALGORITHM.md §7, the evaluation protocol).

Each window of ``S`` tokens is scored on its own: the model sees the window (no BOS, no cache,
no context carried over from the previous window) and predicts its last ``S - 1`` tokens. The
perplexity is ``exp`` of the mean next-token negative log-likelihood over all predicted tokens
of all windows. The windows come from :func:`solver.io.data.eval_windows`, whose protocol
(:func:`solver.io.data.eval_protocol`) is recorded with every figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import torch
import torch.nn.functional as F

from solver.errors import InputError, RunError
from solver.run.stop import CancelToken, RunCancelled

__all__ = ["EvalCancelled", "perplexity"]


class EvalCancelled(RunCancelled):
    """The evaluation was cancelled between two batches; carries the windows done so far.

    Attributes:
        done: windows evaluated before the cancel was seen.
        total: windows that were to be evaluated.
    """

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"evaluation cancelled after {done} of {total} windows")
        self.done = done
        self.total = total


@torch.no_grad()
def perplexity(
    model: Any,
    windows: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    cancel: CancelToken | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Perplexity of a causal LM on ``[W, S]`` non-overlapping windows (see
    :func:`perplexity_steps`, which this runs to the end, calling ``progress`` after each batch).
    """
    steps = perplexity_steps(model, windows, device=device, batch_size=batch_size, cancel=cancel)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as finished:
            value: float = finished.value
            return value
        if progress is not None:
            progress(done, total)


def perplexity_steps(
    model: Any,
    windows: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    cancel: CancelToken | None = None,
) -> Generator[tuple[int, int], None, float]:
    """Perplexity of a causal LM on ``[W, S]`` non-overlapping windows, one batch at a time.

    Yields ``(windows_done, windows_total)`` after each batch, so that a caller can report
    progress as it goes; the perplexity is the generator's return value.

    The model is not moved: the caller places it (and sets eval mode); only the token batches go
    to ``device``. The NLL is summed in float64 from float32 log-probabilities, whatever the
    model's dtype.

    Args:
        model: a causal LM whose forward takes ``input_ids`` and ``use_cache`` and returns
            ``.logits`` of shape ``[B, S, V]``.
        windows: ``[W, S]`` token ids, ``S >= 2``.
        device: where the batches are sent (the model's device).
        batch_size: windows per forward pass.
        cancel: checked before each batch; when set, :class:`EvalCancelled` is raised.

    Returns:
        ``exp(mean next-token NLL)`` (as the generator's return value).

    Raises:
        InputError: the windows are not a non-empty ``[W, S >= 2]`` integer tensor, or
            ``batch_size < 1``.
        EvalCancelled: ``cancel`` was set.
        RunError: the result is not finite (NaN/Inf logits).
    """
    if windows.dim() != 2 or windows.shape[0] < 1 or windows.shape[1] < 2:
        raise InputError(
            f"perplexity needs [windows, seqlen >= 2] tokens, got shape {list(windows.shape)}: "
            "use a longer evaluation text or a larger --seqlen"
        )
    if windows.dtype.is_floating_point or windows.dtype == torch.bool:
        raise InputError(f"perplexity needs integer token ids, got {windows.dtype}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    total = int(windows.shape[0])
    nll_sum = 0.0  # float64 accumulator
    predicted = 0
    for start in range(0, total, batch_size):
        if cancel is not None and cancel.is_set():
            raise EvalCancelled(start, total)
        batch = windows[start : start + batch_size].to(device=device, dtype=torch.long)
        split = _split_head(model)
        if split is None:
            logits = model(input_ids=batch, use_cache=False).logits  # [B, S, V]
        else:  # the LM head one row at a time: [B, S, V] logits never exist at once
            base, head = split
            hidden = base(input_ids=batch, use_cache=False).last_hidden_state  # [B, S, H]
        for row in range(batch.shape[0]):  # one row at a time: float32 logits stay small
            if split is None:
                shift_logits = logits[row, :-1].float()  # [S-1, V]
            else:
                shift_logits = head(hidden[row, :-1]).float()  # [S-1, V]
            targets = batch[row, 1:]  # [S-1]
            nll_sum += float(F.cross_entropy(shift_logits, targets, reduction="sum").double())
            predicted += int(targets.numel())
            del shift_logits
        logits = hidden = None
        yield min(start + batch_size, total), total
    mean_nll = nll_sum / predicted
    value = math.exp(mean_nll) if math.isfinite(mean_nll) and mean_nll < 700 else math.inf
    if not math.isfinite(value) or math.isnan(mean_nll):
        raise RunError(
            f"perplexity is not finite (mean NLL {mean_nll}): the model produced NaN/Inf logits; "
            "check the pruned weights, or evaluate in float32"
        )
    return value


#: Families whose logits are exactly ``lm_head(base(input_ids).last_hidden_state)`` (no logit
#: scaling or soft-capping), so the head can be applied one window at a time.
_PLAIN_HEAD_FAMILIES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def _split_head(model: Any) -> tuple[Any, Any] | None:
    """``(base model, LM head)`` when the logits can be computed row by row, else None.

    A batch's full ``[B, S, V]`` float32 logits dominate the evaluation's memory (8 windows of
    256 tokens with a 49k vocabulary are 400 MB, twice over inside the forward); applying the
    head per window keeps one ``[S, V]`` at a time and gives the same numbers.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in _PLAIN_HEAD_FAMILIES:
        return None
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if base is None or head is None or base is model:
        return None
    return base, head
