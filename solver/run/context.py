"""What the parts of one run share: its options, device, clock, cancel token and running state.

One :class:`RunContext` is made per call of :func:`solver.run.pipeline.run` and handed to the
driver's parts (:mod:`solver.run.blocks`, :mod:`solver.run.layers`, :mod:`solver.run.measure`);
it lives in one generator and is never shared between threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from solver.config import RunConfig
from solver.math.activations import threshold_sparsify, topk_sparsify
from solver.run import estimate, methods
from solver.run.distributed import Ranks
from solver.run.offload import Placement
from solver.run.stop import NEVER, CancelToken, RunCancelled

TIMING_PARTS = ("load", "forward", "statistics", "solve", "eval")
"""Where a run's seconds go (the ``timings`` of its :class:`~solver.events.Finished` event)."""


@dataclass
class RunContext:
    """One run's options and state.

    Attributes:
        config: what to run.
        device: where blocks are solved and the model is evaluated.
        cancel: checked between layers and batches (:meth:`check_cancel`).
        start: the run's start on the ``time.monotonic`` clock (moved back on resume so that
            times continue from the interrupted run's).
        block: the decoder block being pruned (-1 before the first).
        phase: where the run is, as words that follow "cancelled" (for a cancel's reason).
        thresholds: calibrated activation thresholds by full layer name (threshold rule).
        timings: seconds spent per part of the run (:data:`TIMING_PARTS`).
        layer_act: the calibration activation sparsity of every solved layer.
        eval_act: the activation sparsity measured by the final evaluation.
        model_mb: the loaded model's weights, for an out-of-memory message.
        need: what pruning one block needs, for an out-of-memory message.
        dist: this process's place among several data-parallel ranks (None: one process).
        place: where the weights and the calibration streams live (``--offload``).
    """

    config: RunConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cancel: CancelToken = NEVER
    start: float = field(default_factory=time.monotonic)
    block: int = -1
    phase: str = "while loading the model"
    thresholds: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMING_PARTS, 0.0))
    layer_act: list[float] = field(default_factory=list)
    eval_act: float | None = None
    model_mb: float = 0.0
    need: estimate.BlockMemory | None = None
    dist: Ranks | None = None
    place: Placement = field(default_factory=Placement)

    @property
    def method(self) -> methods.Method:
        """The run's pruning method (looked up by the config's name, which validation checks)."""
        return methods.get(self.config.method)

    def t(self) -> float:
        """Seconds since the run started."""
        return round(time.monotonic() - self.start, 4)

    def check_cancel(self) -> None:
        """Stop the run if the cancel token is set.

        Raises:
            RunCancelled: it is.
        """
        if self.cancel.is_set():
            raise RunCancelled(f"cancelled {self.phase}")

    @property
    def sparse_calibration(self) -> bool:
        """Whether the method calibrates on activation-sparse inputs (``X^``, DuoGPT)."""
        return self.method.reads.mismatch and self.config.act_sparsity > 0

    def sparsify(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """The activation-sparse version of a layer input, as the sparsifier hook makes it."""
        if self.config.act_sparsity <= 0:
            return x
        if self.config.act_rule == "threshold":
            return threshold_sparsify(x, self.thresholds[name])
        return topk_sparsify(x, self.config.act_sparsity)

    def act_sparsity(self) -> float:
        """Activation sparsity of the final evaluation, else the mean over the solved layers."""
        if self.eval_act is not None:
            return self.eval_act
        if self.layer_act:
            return sum(self.layer_act) / len(self.layer_act)
        return 0.0
