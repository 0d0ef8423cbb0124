"""The pre-flight estimate as text: the one wording that ``duogpt prune`` prints on stderr and the
setup screen shows under its form.

The figures come from :func:`solver.run.estimate.estimate` and the memory check from
:func:`solver.io.system.available_memory_mb`. :func:`estimate_lines` imports torch
(``solver.io.system``) on first use, so importing this module stays light (``duogpt --help``)
and the setup screen calls it on a thread worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from duogpt_tui.formatting import rough_duration
from solver.config import RunConfig

if TYPE_CHECKING:
    from solver.run.estimate import Estimate


@dataclass(frozen=True)
class EstimateLines:
    """What the pre-flight check says about a run's cost.

    Attributes:
        line: ``pre-flight: about 1.2 GB of memory and 3 min on cpu (...); offload none (...)``,
            or why there is no estimate.
        warnings: ``warning: this run needs about ... but only ... is available ...`` when the
            estimate exceeds the memory available, and ``warning: thin calibration: ...`` when
            the calibration tokens are fewer than 2x the widest layer's inputs (one line each).
    """

    line: str
    warnings: tuple[str, ...] = ()

    @property
    def warning(self) -> str:
        """The warnings, one per line (empty when there are none)."""
        return "\n".join(self.warnings)

    @property
    def lines(self) -> tuple[str, ...]:
        """The estimate line, then the warnings."""
        return (self.line, *self.warnings)


def estimate_lines(config: RunConfig) -> EstimateLines:
    """The pre-flight estimate of ``config`` and its warnings.

    The line states the offload mode the run uses (what ``--offload auto`` chose, and why) and
    the memory of each mode.

    Raises:
        InputError: the device cannot be used (``--device cuda`` without CUDA).
    """
    from solver.io import system
    from solver.run import estimate

    device = system.resolve_device(config.device)
    available = system.available_memory_mb(device)
    guess = estimate.estimate(config, device=device.type, available_mb=available)
    if guess.seconds <= 0:
        return EstimateLines(f"pre-flight: no estimate ({guess.detail})")
    needed = estimate.megabytes(guess.memory_mb)
    line = (
        f"pre-flight: about {needed} of memory and {rough_duration(guess.seconds)} on {device} "
        f"({guess.detail}); {offload_text(guess, device.type)}"
    )
    warnings = []
    if available is not None and guess.memory_mb > available:
        elsewhere = "--device cpu" if device.type == "cuda" else "a machine with more memory"
        if device.type == "cuda" and guess.offload == "none":
            elsewhere = f"--offload cpu, or {elsewhere}"
        elif guess.offload != "disk" and guess.mode("disk").on(device.type) <= available:
            elsewhere = f"--offload disk, or {elsewhere}"
        warnings.append(
            f"warning: this run needs about {needed} but only {estimate.megabytes(available)} "
            f"is available on {device}: use fewer --nsamples, a shorter --seqlen, a smaller "
            f"--batch-size, or {elsewhere}"
        )
    if device.type == "cuda" and guess.offload in ("cpu", "disk"):
        warnings.extend(host_warning(guess, system.available_memory_mb(None)))
    thin = estimate.thin_calibration_for(config)
    if thin:
        warnings.append(f"warning: {thin}")
    return EstimateLines(line, tuple(warnings))


def host_warning(guess: Estimate, free: float | None) -> tuple[str, ...]:
    """A warning when the host memory that ``--offload cpu`` or ``disk`` keeps (or needs to
    load the model) exceeds ``free``; ``--offload disk`` is advised when it would fit."""
    from solver.run import estimate

    mode = guess.mode(guess.offload)
    host = estimate.BASE_MEMORY_MB + max(mode.host, mode.loading)
    if free is None or host <= free:
        return ()
    disk = guess.mode("disk")
    disk_host = estimate.BASE_MEMORY_MB + max(disk.host, disk.loading)
    advice = "--offload disk, " if guess.offload != "disk" and disk_host <= free else ""
    return (
        f"warning: with --offload {guess.offload} this run keeps about "
        f"{estimate.megabytes(host)} in host memory but only {estimate.megabytes(free)} is "
        f"available: use {advice}fewer --nsamples, a shorter --seqlen, or a machine with more "
        "memory",
    )


def offload_text(guess: Estimate, kind: str) -> str:
    """``offload none (none 402 MB, cpu 402 MB, disk 402 MB)``: the mode the run uses and each
    mode's memory.

    On CUDA each mode's peak on the device, and the host memory that ``cpu`` and ``disk`` keep
    (``disk`` once the model is loaded: loading reads all of it); on the CPU the device is the
    host, so ``none`` and ``cpu`` need about the same, and ``disk`` less when the blocks'
    weights outweigh the calibration streams (never less than loading the model takes).
    """
    from solver.run import estimate

    chose = f", chosen by auto: {guess.reason}" if guess.reason else ""
    none, cpu, disk = guess.mode("none"), guess.mode("cpu"), guess.mode("disk")

    def mb(value: float) -> str:
        return estimate.megabytes(round(value, 1))  # rounded as the estimate's own figure

    if kind == "cuda":
        each = (
            f"none {mb(none.device)} on {kind}; cpu {mb(cpu.device)} on {kind} + "
            f"{mb(cpu.host)} of host memory; disk {mb(disk.device)} on {kind} + "
            f"{mb(disk.host)} of host memory once loaded"
        )
    else:
        each = f"none {mb(none.on(kind))}, cpu {mb(cpu.on(kind))}, disk {mb(disk.on(kind))}"
    return f"offload {guess.offload}{chose} ({each})"
