"""The setup screen's pre-flight line: the estimate of memory and time, or what is wrong.

The figures come from :func:`solver.run.estimate.estimate` and the memory check from
:func:`solver.io.system.available_memory_mb`, worded as ``duogpt prune`` words them on stderr
(``duogpt_tui.cli.preflight_estimate``; a test keeps the two in step), so the CLI and the
workbench say the same thing for the same settings. :func:`estimate_lines` imports torch
(``solver.io.system``), so the setup screen calls it on a thread worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.widgets import Static

from solver.config import RunConfig


@dataclass(frozen=True)
class EstimateLines:
    """What the pre-flight check says about a run's cost.

    Attributes:
        line: ``pre-flight: about 1.2 GB of memory and 3 min on cpu (...)``, or why there is no
            estimate.
        warning: ``warning: this run needs about ... but only ... is available ...`` when the
            estimate exceeds the memory available, and ``warning: thin calibration: ...`` when
            the calibration tokens are fewer than 2x the widest layer's inputs (one line each);
            empty otherwise.
    """

    line: str
    warning: str = ""


def duration(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``2.5 h`` (as ``duogpt prune`` prints durations)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_lines(config: RunConfig) -> EstimateLines:
    """The pre-flight estimate of ``config`` and the memory warning, as the CLI prints them.

    Raises:
        InputError: the device cannot be used (``--device cuda`` without CUDA).
    """
    from solver.io import system
    from solver.run import estimate

    device = system.resolve_device(config.device)
    guess = estimate.estimate(config, device=device.type)
    if guess.seconds <= 0:
        return EstimateLines(f"pre-flight: no estimate ({guess.detail})")
    needed = estimate.megabytes(guess.memory_mb)
    line = (
        f"pre-flight: about {needed} of memory and {duration(guess.seconds)} on {device} "
        f"({guess.detail})"
    )
    warnings = []
    available = system.available_memory_mb(device)
    if available is not None and guess.memory_mb > available:
        elsewhere = "--device cpu" if device.type == "cuda" else "a machine with more memory"
        warnings.append(
            f"warning: this run needs about {needed} but only {estimate.megabytes(available)} "
            f"is available on {device}: use fewer --nsamples, a shorter --seqlen, a smaller "
            f"--batch-size, or {elsewhere}"
        )
    thin = estimate.thin_calibration_for(config)
    if thin:
        warnings.append(f"warning: {thin}")
    return EstimateLines(line, "\n".join(warnings))


class PreflightLine(Static):
    """Under the setup form: the estimate (and the memory warning), or why there is none.

    Classes: ``-invalid`` when a field is wrong, ``-warning`` when memory looks too small,
    ``-pending`` while the check of new settings runs (the previous text stays, dimmed).
    """

    DEFAULT_CSS = """
    PreflightLine {
        height: auto;
        padding: 0 1;
        color: $text-muted;
        background: $boost;
    }
    PreflightLine.-pending {
        text-style: dim;
    }
    PreflightLine.-warning {
        color: $text-warning;
    }
    PreflightLine.-invalid {
        color: $text-error;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        """A line that says the check is running; text is set by the ``show_*`` methods."""
        super().__init__("pre-flight: checking…", markup=False, id=id, classes=classes)

    def show_estimate(self, lines: EstimateLines) -> None:
        """Show the estimate, and the memory warning under it."""
        self.set_classes(self._kept() | ({"-warning"} if lines.warning else set()))
        self.update(f"{lines.line}\n{lines.warning}" if lines.warning else lines.line)

    def show_problem(self, problem: str) -> None:
        """Show why the settings cannot run."""
        self.set_classes(self._kept() | {"-invalid"})
        self.update(f"pre-flight: {problem or 'fix the highlighted fields'}")

    def show_pending(self) -> None:
        """The settings changed and are being checked: dim the estimate shown until the answer
        (a problem shown is replaced, since the change may have fixed it)."""
        if self.has_class("-invalid"):
            self.set_classes(self._kept())
            self.update("pre-flight: checking…")
        self.add_class("-pending")

    def _kept(self) -> set[str]:
        """The classes that are not this widget's states."""
        return set(self.classes) - {"-pending", "-warning", "-invalid"}
