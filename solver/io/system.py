"""Facts about the machine and the run's environment: devices, memory, library versions.

Measured where the work happens (ARCHITECTURE.md, "Long work is measured where it happens"), so
the UI, CLI and report never time or probe anything themselves.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
from importlib import metadata

import psutil
import torch

from solver.errors import InputError


def cuda_available() -> bool:
    """True when a CUDA device can be used (never raises)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver must not break the CPU path
        return False


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto | cpu | cuda | cuda:N`` into a device.

    Raises:
        InputError: CUDA was asked for and is not available.
    """
    if spec == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if spec.startswith("cuda"):
        if not cuda_available():
            raise InputError(
                f"--device {spec} was asked for but CUDA is not available on this machine: "
                "use --device cpu (or auto)"
            )
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {spec!r}: use auto, cpu or cuda")


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory so far: the accelerator's allocator peak on CUDA, else the process's peak RSS."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def available_memory_mb(device: torch.device | None = None) -> float | None:
    """Memory a run can still use: free accelerator memory on CUDA, else the host's available RAM.

    The host figure is psutil's ``available`` (``MemAvailable`` on Linux). None when it cannot
    be known (never raises).
    """
    try:
        if device is not None and device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return free / 2**20
        return float(psutil.virtual_memory().available) / 2**20
    except Exception:  # an estimate must never stop a run
        return None


def versions() -> dict[str, str]:
    """Versions of the libraries that shape the results."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("transformers", "duogpt-tui"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def host(device: torch.device) -> dict[str, object]:
    """A short description of the machine the run used."""
    info: dict[str, object] = {
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }
    with contextlib.suppress(Exception):  # a description must never stop a run
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    if device.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(device)
    return info


MMAP_THRESHOLD_BYTES = 4 * 2**20
"""Allocations above this size get their own memory mapping (see :func:`tune_allocator`)."""


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc ``malloc_trim``; Linux only).

    Tensors below :data:`MMAP_THRESHOLD_BYTES` live on the heap, whose freed pages glibc keeps:
    ``--offload disk`` calls this once a block's weights have moved into a mapped file, so that
    the copy they leave behind stops counting (SmolLM2-135M loaded in bfloat16: about 0.2 GB).

    Returns:
        True when memory was handed back.
    """
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def tune_allocator() -> bool:
    """Keep glibc from hoarding freed tensor memory (Linux only; a no-op elsewhere).

    glibc raises its mmap threshold dynamically up to 32 MB after large blocks are freed, after
    which the activation-sized temporaries of a forward pass (top-k indices, sparsified inputs,
    logits rows) come from the heap and fragment it: on SmolLM2-135M the process's peak RSS grew
    by ~0.75 GB during one activation-sparse evaluation. A fixed threshold sends every allocation
    above :data:`MMAP_THRESHOLD_BYTES` to its own mapping, returned to the system when freed.

    Returns:
        True when the setting was applied.
    """
    if sys.platform != "linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3  # from malloc.h
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
