"""Shared fixtures: a tiny seeded model for fast tests, the real default model for slow ones.

* ``tiny_model`` (session): ``tiny-random`` with seed 0, shared by every test — never modify it;
  take ``fresh_tiny_model`` for a private copy (it costs a few milliseconds).
* ``default_model`` (session): the real SmolLM2-135M (``smollm2-135m``), from the user's cache
  (the first use converts the GGUF, ~20 s). Tests that use it are marked ``slow`` automatically.

Without CUDA, ``TRITON_INTERPRET=1`` is set here, before any test module is collected: Triton
fixes its mode when it is first imported, and the import-hygiene test (or any module that
imports :mod:`solver.kernels.triton_gemv`) may import it before the Triton tests are collected,
which would leave them skipped (tests/solver/test_triton_kernels.py).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # the Triton kernels run under Triton's interpreter on CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on the two cores: one torch thread each, and for every
    # process a test starts (the CLI's runs, the ranks), or two threads each would thrash
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from solver.io.models import LoadedModel, load_model, tiny_random_model


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the real default model as ``slow``, and run the slow tests
    first: with two workers (``make test``) the longest ones then overlap the many short ones
    instead of ending the run alone."""
    for item in items:
        if "default_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow first


@pytest.fixture(scope="session")
def tiny_model() -> LoadedModel:
    """``tiny-random`` (seed 0), shared across the session: do not modify it."""
    return tiny_random_model(seed=0)


@pytest.fixture
def fresh_tiny_model() -> LoadedModel:
    """A private ``tiny-random`` (seed 0) that the test may modify."""
    return tiny_random_model(seed=0)


@pytest.fixture(scope="session")
def default_model() -> LoadedModel:
    """The real SmolLM2-135M, loaded once per session (converted into the cache on first use)."""
    return load_model("smollm2-135m")
