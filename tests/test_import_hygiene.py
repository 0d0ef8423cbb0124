"""Layering rules, checked in fresh interpreters (ARCHITECTURE.md, "Rules of the house").

* ``solver`` never imports textual, rich or typer.
* The headless pieces of the app (run store, runner, report, plots) never import textual.
* ``duogpt --help`` stays fast: importing the CLI loads neither torch nor textual.
* Terminal events (``Finished``, ``Failed``, ``Cancelled``) are made in one place, the runner
  (read, not executed): the solver returns its totals or raises, the TUI shows what is on disk.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def solver_modules(package: str = "solver") -> list[str]:
    """Every module of ``package`` found on disk (nothing listed by hand)."""
    folder = ROOT.joinpath(*package.split("."))
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


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


def test_solver_never_imports_ui_libraries() -> None:
    modules = solver_modules()
    assert {"solver.events", "solver.config", "solver.run.pipeline"} <= set(modules)
    loaded = loaded_after_import(modules)
    assert not loaded & {"textual", "rich", "typer"}, loaded & {"textual", "rich", "typer"}


def test_solver_modules_are_found_on_disk() -> None:
    """The discovery sees every subpackage, so a new module cannot escape the checks."""
    modules = solver_modules()
    for floor in ("solver.math", "solver.io", "solver.run"):
        assert floor in modules and any(m.startswith(floor + ".") for m in modules), floor


def imported_solver_modules(module: str) -> set[str]:
    """The ``solver`` modules that ``module``'s source imports (read, not executed)."""
    path = ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "solver"}


def test_pure_math_imports_neither_io_nor_run() -> None:
    """``solver.math`` is tensors in, tensors out: no model or file I/O, no run driver."""
    math_modules = [m for m in solver_modules() if m.startswith("solver.math")]
    assert len(math_modules) > 3
    for module in math_modules:
        bad = {
            name
            for name in imported_solver_modules(module)
            if name.startswith(("solver.io", "solver.run"))
        }
        assert not bad, f"{module} imports {sorted(bad)}"
    loaded = loaded_after_import(math_modules)
    assert not loaded & {"transformers", "gguf", "textual", "rich", "typer"}, loaded


def test_headless_app_modules_never_import_textual() -> None:
    modules = ["duogpt_tui.runstore", "duogpt_tui.runner", "duogpt_tui.report"]
    modules += ["duogpt_tui.textplot", "duogpt_tui.summary"]
    modules += ["duogpt_tui.runview", "duogpt_tui.formatting", "duogpt_tui.eventtext"]
    modules += ["duogpt_tui.eventlog", "duogpt_tui.eventfile"]
    loaded = loaded_after_import(modules)
    assert not loaded & {"textual", "rich", "typer", "torch"}, loaded


def test_cli_import_is_light() -> None:
    loaded = loaded_after_import(["duogpt_tui.cli"])
    assert "typer" in loaded
    assert not loaded & {"textual", "torch", "transformers"}, loaded


TERMINAL_EVENTS = frozenset({"Finished", "Failed", "Cancelled"})
"""The terminal event classes of :mod:`solver.events`."""

PRODUCT_PACKAGES = ("solver", "duogpt_tui", "screens")
"""The packages that ship (tests and benchmarks may make events of their own)."""

RUNNER = ROOT / "duogpt_tui" / "runner.py"
"""The one module allowed to make terminal events."""


def terminal_event_calls(path: Path) -> list[str]:
    """``line: name`` of every call in ``path`` that makes a terminal event.

    A call counts when it names a terminal event class (``Finished(...)``, ``ev.Failed(...)``) or
    a name imported as one (``from solver.events import Cancelled as Stop``).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set(TERMINAL_EVENTS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname for a in node.names if a.asname and a.name in TERMINAL_EVENTS}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in names:
            found.append(f"{node.lineno}: {name}")
    return found


def test_only_the_runner_makes_terminal_events() -> None:
    """Issue 10: the solver yields no terminal event and no screen makes one; the runner does."""
    makers = {}
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            calls = terminal_event_calls(path)
            if calls and path != RUNNER:
                makers[str(path.relative_to(ROOT))] = calls
    assert not makers, f"terminal events made outside duogpt_tui/runner.py: {makers}"
    made = {call.split(": ")[1] for call in terminal_event_calls(RUNNER)}
    assert made == TERMINAL_EVENTS, made  # the scan sees the runner make all three
