"""The pre-flight's file and machine checks, each with the field it blames and the fields it reads.

One list for both callers: :func:`solver.run.pipeline.preflight` runs the checks in order and
stops at the first problem; the setup screen runs them all on a worker and shows each problem
next to its field, keeping it for as long as the fields the check reads keep their values.

The checks import torch (``solver.io.system``) when they run, not when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from solver.config import RunConfig


@dataclass(frozen=True)
class InputCheck:
    """One pre-flight check.

    Attributes:
        field: the field a problem is blamed on.
        reads: the fields the check reads (a problem found still holds while they keep their
            values).
        run: the check; raises :class:`~solver.errors.InputError` with one actionable line.
    """

    field: str
    reads: tuple[str, ...]
    run: Callable[[RunConfig], None]


def check_device(config: RunConfig) -> None:
    """The device is usable (CUDA is there when asked for)."""
    from solver.io import system

    system.resolve_device(config.device)


def check_model(config: RunConfig) -> None:
    """The model's files, its context (``--seqlen`` must fit it) and its layout.

    The layout check builds the model from its config (or GGUF metadata) alone on the ``meta``
    device (:func:`solver.io.inputs.config_skeleton`) and runs the static part of discovery on
    it (:func:`solver.run.discovery.require_block_list`): a model without a decoder block list
    is refused here, before its weights are read or even checked (issue 11).
    """
    from solver.io import inputs
    from solver.run import discovery

    inputs.check_model(config.model, config.seqlen, check_layout=discovery.require_block_list)


def check_calib(config: RunConfig) -> None:
    """The calibration text can hold ``nsamples x seqlen`` tokens."""
    from solver.io import inputs

    inputs.check_text("--calib", config.calib, config.nsamples * config.seqlen)


def check_eval(config: RunConfig) -> None:
    """The evaluation text can hold one window of ``eval_len`` tokens (unless eval is skipped)."""
    from solver.io import inputs

    if config.eval_windows > 0:
        length_flag = "--eval-seqlen" if config.eval_seqlen else "--seqlen"
        inputs.check_text("--eval", config.eval, config.eval_len, length_flag)


INPUT_CHECKS = (
    InputCheck("device", ("device",), check_device),
    InputCheck("model", ("model", "seqlen"), check_model),
    InputCheck("calib", ("calib", "nsamples", "seqlen"), check_calib),
    InputCheck("eval", ("eval", "seqlen", "eval_seqlen", "eval_windows"), check_eval),
)
"""The checks, in the order the pre-flight runs them."""
