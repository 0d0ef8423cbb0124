"""Layering rules, checked in fresh interpreters (ARCHITECTURE.md, "Rules of the house").

* ``solver`` never imports textual, rich or typer.
* The headless pieces of the app (run store, runner, report, plots) never import textual.
* ``duogpt --help`` stays fast: importing the CLI loads neither torch nor textual.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SOLVER_MODULES = (
    "solver",
    "solver.events",
    "solver.config",
    "solver.errors",
    "solver.pipeline",
    "solver.evaluate",
    "solver.obc",
    "solver.masks",
    "solver.stats",
    "solver.activations",
    "solver.models",
    "solver.data",
    "solver.perplexity",
    "solver.adapters",
    "solver.system",
    "solver.inputs",
    "solver.estimate",
)


def loaded_after_import(modules: list[str]) -> set[str]:
    """Top-level packages in ``sys.modules`` after importing ``modules`` in a new interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def existing(modules: tuple[str, ...]) -> list[str]:
    """The modules that exist in this checkout (others are still being written)."""
    found = []
    for name in modules:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except ModuleNotFoundError:
            continue
    return found


def test_solver_never_imports_ui_libraries() -> None:
    modules = existing(SOLVER_MODULES)
    assert "solver.events" in modules and "solver.config" in modules
    loaded = loaded_after_import(modules)
    assert not loaded & {"textual", "rich", "typer"}, loaded & {"textual", "rich", "typer"}


def test_headless_app_modules_never_import_textual() -> None:
    modules = ["duogpt_tui.runstore", "duogpt_tui.runner", "duogpt_tui.report"]
    modules += ["duogpt_tui.textplot", "duogpt_tui.summary"]
    loaded = loaded_after_import(modules)
    assert not loaded & {"textual", "rich", "typer", "torch"}, loaded


def test_cli_import_is_light() -> None:
    loaded = loaded_after_import(["duogpt_tui.cli"])
    assert "typer" in loaded
    assert not loaded & {"textual", "torch", "transformers"}, loaded
