"""How the workbench writes numbers: the one set of formatters of the CLI, the TUI and the report.

Every function takes a value that may be missing (``None``) and returns text; ``missing`` says
what a missing value reads as (``-`` in tables on a terminal, ``n/a`` in the report). All are
pure and deterministic, so the report stays byte-identical across renders.
"""

from __future__ import annotations

import math

MISSING = "-"
"""What a missing value reads as on a terminal."""

SPEED_MODES = (("dense", "dense"), ("act", "act-only"), ("weight", "weight-only"), ("dual", "dual"))
"""The modes of a measured layer-shape row (``duogpt speed``), with their titles."""


def percent(value: float | None, missing: str = MISSING) -> str:
    """A fraction as a percentage with one decimal: ``0.5`` -> ``50.0%``."""
    if value is None or not math.isfinite(value):
        return missing
    return f"{value * 100:.1f}%"


def number(value: float | None, digits: int = 2, missing: str = MISSING) -> str:
    """A number with fixed decimals (``inf`` and ``nan`` as Python spells them)."""
    if value is None:
        return missing
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def perplexity(value: float | None, missing: str = MISSING) -> str:
    """A perplexity with two decimals."""
    return number(value, 2, missing)


def seconds(value: float | None, missing: str = MISSING) -> str:
    """Seconds with one decimal and a unit: ``12.3 s`` (exact figures, as in the report)."""
    return missing if value is None else f"{value:.1f} s"


def duration(value: float | None, missing: str = "?") -> str:
    """A compact running time or ETA: ``5.0s``, ``42s``, ``1m15s``, ``3h02m``."""
    if value is None:
        return missing
    value = max(float(value), 0.0)
    if value < 60:
        return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rough_duration(value: float) -> str:
    """An estimated duration, as rough as an estimate: ``45 s``, ``12 min``, ``2.5 h``."""
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def eta(value: float | None) -> str:
    """``ETA 1m15s`` for a known time left, else empty (how the CLI and the TUI show the ETA)."""
    return "" if value is None else f"ETA {duration(value)}"


def megabytes(value: float | None, missing: str = MISSING) -> str:
    """Megabytes, rounded: ``123 MB`` (zero or less counts as not measured)."""
    return missing if value is None or value <= 0 else f"{value:.0f} MB"


def scientific(value: float, digits: int = 3) -> str:
    """A reconstruction error and the like in scientific notation: ``1.234e-03``."""
    return f"{value:.{digits}e}" if math.isfinite(value) else str(value)


def general(value: float) -> str:
    """A short general number with four significant digits: ``0.125``, ``1e-05``."""
    return f"{value:.4g}"


def short_number(value: float) -> str:
    """A number in at most 9 characters for a plot's axis: ``1.5``, ``123.4``, ``1.2e-05``."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if 1e-3 <= magnitude < 1e5:
        return f"{value:.4g}"
    return f"{value:.1e}"


def count(value: int) -> str:
    """A parameter count in millions (or thousands for small models): ``134.5M``, ``12.3k``."""
    if value >= 10**6:
        return f"{value / 10**6:.1f}M"
    if value >= 10**3:
        return f"{value / 10**3:.1f}k"
    return str(value)


def speed_cell(row: dict[str, float], mode: str) -> str:
    """One mode of a measured layer-shape row (``duogpt speed``): microseconds per GEMV, the
    speedup over dense and the byte bound in brackets, ``12.3 1.85x [2.10x]``."""
    us, ratio, bound = row[f"{mode}_us"], row[f"{mode}_x"], row[f"{mode}_bound"]
    return f"{us:.1f} {ratio:.2f}x [{bound:.2f}x]"
