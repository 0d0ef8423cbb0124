"""The setup screen: choose the model, data, method and sparsities, then start the run.

Every field is checked as it changes (:mod:`screens.setup_fields`, which defers to
``RunConfig.validate`` and ``parse_pattern``) and the reason appears next to it. A pre-flight line
estimates memory and time. ``ctrl+r`` asks the App to start the run; the App runs the real
pre-flight check and shows its one-line refusal here (:attr:`DuoGPTApp.start_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static

from duogpt_tui.widgets.preflight import PreflightLine
from screens.catalog import Catalog
from screens.dialogs import FilePickerDialog
from screens.setup_fields import NUMBER_CHECKERS, Check, check_model, check_text
from solver.config import METHODS, RunConfig
from solver.errors import InputError

if TYPE_CHECKING:
    from duogpt_tui.app import DuoGPTApp

SOURCES = {"model": "Model", "calib": "Calibration text", "eval": "Evaluation text"}
"""The fields picked from a list or typed as a path, with their labels."""

NUMBERS = {
    "pattern": ("Weight pattern", "unstructured or N:M, e.g. 2:4"),
    "weight_sparsity": ("Weight sparsity", "fraction of weights pruned, e.g. 0.5"),
    "act_sparsity": ("Activation sparsity", "fraction of inputs zeroed per token; 0 = off"),
    "alpha": ("Alpha (DuoGPT)", "residual scale; 0 = SparseGPT on sparse inputs"),
    "nsamples": ("Calibration samples", "sequences"),
    "seqlen": ("Sequence length", "tokens per sample and per evaluation window"),
    "eval_windows": ("Evaluation windows", "0 skips perplexity"),
    "seed": ("Seed", "seeds sampling and everything random"),
}
"""The typed fields, with their labels and placeholders, in form order."""

METHOD_LABELS = {
    "duogpt": "duogpt (dual-sparse OBS)",
    "sparsegpt": "sparsegpt",
    "wanda": "wanda",
    "magnitude": "magnitude",
    "dense": "dense (no weight pruning)",
}
"""What the method picker shows for each method."""

PATTERN_SUGGESTIONS = SuggestFromList(["unstructured", "2:4", "4:8"])
"""Completions offered while typing a weight pattern."""

PROXY_DEFAULT = 5
"""Blocks between proxy perplexities when the toggle is switched on."""


class SetupScreen(Screen[None]):
    """The form that makes a :class:`~solver.config.RunConfig` and starts the run."""

    CSS_PATH = "setup.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Start run", tooltip="Pre-flight check, then start pruning"),
        Binding("ctrl+o", "browse", "Browse", tooltip="Pick a model folder or text file"),
    ]

    def __init__(self) -> None:
        """Create the screen; the form is filled from the App's initial config on compose."""
        super().__init__()
        self.problems: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._browse_target = "model"
        self._choices: dict[str, set[str]] = {}

    @property
    def duo(self) -> DuoGPTApp:
        """The workbench App (typed)."""
        return self.app  # type: ignore[return-value]

    # ----------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        """The form, the pre-flight line and the start error line."""
        config = self.duo.initial_config
        catalog = self.duo.catalog
        yield Header()
        with VerticalScroll(id="setup-form"):
            for name, label in SOURCES.items():
                yield from self._source_row(name, label, str(getattr(config, name)), catalog)
            yield self._row(
                "method",
                "Method",
                Select(
                    [(METHOD_LABELS.get(m, m), m) for m in METHODS],
                    value=config.method if config.method in METHODS else "duogpt",
                    allow_blank=False,
                    compact=True,
                    id="method",
                ),
            )
            for name, (label, placeholder) in NUMBERS.items():
                field = Input(
                    str(getattr(config, name)),
                    placeholder=placeholder,
                    compact=True,
                    id=name,
                    classes="field-input",
                    suggester=PATTERN_SUGGESTIONS if name == "pattern" else None,
                )
                yield self._row(name, label, field)
            devices = list(catalog.devices)
            if config.device not in devices:
                devices.append(config.device)
            yield self._row(
                "device",
                "Device",
                Select(
                    [(d, d) for d in devices],
                    value=config.device,
                    allow_blank=False,
                    compact=True,
                    id="device",
                ),
            )
            every = config.proxy_every or PROXY_DEFAULT
            yield self._row(
                "proxy_every",
                "Proxy perplexity",
                Checkbox("every", config.proxy_every > 0, compact=True, id="proxy-on"),
                Input(
                    str(every),
                    compact=True,
                    id="proxy_every",
                    classes="field-input -short",
                    disabled=config.proxy_every == 0,
                ),
                Label("blocks", classes="field-unit"),
            )
        yield PreflightLine(id="preflight")
        yield Static("", id="start-error", markup=False)
        yield Footer()

    def _row(self, name: str, label: str, *widgets: Widget) -> Horizontal:
        """One form row: label, widgets and the reason/hint line for field ``name``."""
        return Horizontal(
            Label(label, classes="field-label"),
            *widgets,
            Static("", id=f"reason-{name}", classes="reason", markup=False),
            classes="field-row",
            id=f"row-{name}",
        )

    def _source_row(self, name: str, label: str, value: str, catalog: Catalog) -> ComposeResult:
        """A quick-pick list, the typed spec and a browse button for a model or text field."""
        choices = catalog.model_choices() if name == "model" else catalog.text_choices()
        values = [v for _, v in choices]
        self._choices[name] = set(values)
        yield self._row(
            name,
            label,
            Select(
                choices,
                value=value if value in values else Select.NULL,
                prompt="other…",
                compact=True,
                id=f"{name}-choice",
                classes="source-choice",
            ),
            Input(
                value,
                placeholder="folder, file or hub id" if name == "model" else ".txt / .jsonl file",
                compact=True,
                id=name,
                classes="field-input -source",
                suggester=SuggestFromList(values, case_sensitive=True),
            ),
            Button("…", id=f"browse-{name}", compact=True, classes="browse"),
        )

    def on_mount(self) -> None:
        """Validate the prefilled form, follow the App's start errors and catalog."""
        self.sub_title = "setup"
        self.watch(self.duo, "start_error", self._show_start_error)
        self.watch(self.duo, "catalog", self._apply_catalog, init=False)
        self.revalidate()
        self.query_one("#model-choice", Select).focus()

    # ----------------------------------------------------------------------------- events

    @on(Input.Changed)
    @on(Select.Changed, "#method, #device")
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        """Any field changed: check the form again."""
        self.query_one("#proxy_every", Input).disabled = not self.query_one(
            "#proxy-on", Checkbox
        ).value
        self.revalidate()

    @on(Input.Changed, ".-source")
    def _source_typed(self, event: Input.Changed) -> None:
        """Keep the quick-pick list in step with a typed spec."""
        assert event.input.id is not None
        select = self.query_one(f"#{event.input.id}-choice", Select)
        name = event.input.id
        target = event.value.strip() if event.value.strip() in self._choices[name] else Select.NULL
        if select.value != target:
            select.value = target

    @on(Select.Changed, ".source-choice")
    def _source_picked(self, event: Select.Changed) -> None:
        """A pick from the list fills the typed spec."""
        if event.value is Select.NULL:
            return
        name = (event.select.id or "").removesuffix("-choice")
        field = self.query_one(f"#{name}", Input)
        if field.value != event.value:
            field.value = str(event.value)

    @on(Button.Pressed, ".browse")
    def _browse_pressed(self, event: Button.Pressed) -> None:
        """A browse button opens the file picker for its row."""
        self._browse_target = (event.button.id or "browse-model").removeprefix("browse-")
        self.action_browse()

    def action_browse(self) -> None:
        """Pick a folder or file for the focused source field (the model by default)."""
        focused = self.focused
        if focused is not None and focused.id:
            name = focused.id.removesuffix("-choice").removeprefix("browse-")
            if name in SOURCES:
                self._browse_target = name
        target = self._browse_target
        current = Path(self.query_one(f"#{target}", Input).value.strip() or ".").expanduser()
        root = current if current.is_dir() else current.parent
        root = root if root.is_dir() else Path.cwd()

        def chosen(path: Path | None) -> None:
            """Put the picked path into the field."""
            if path is not None:
                self.query_one(f"#{target}", Input).value = str(path)

        what = "a model folder or .gguf file" if target == "model" else "a .txt or .jsonl file"
        self.app.push_screen(FilePickerDialog(f"{SOURCES[target]}: pick {what}", root), chosen)

    # ----------------------------------------------------------------------------- checks

    def _check(self, name: str) -> Check:
        """Check one field from its widget."""
        catalog = self.duo.catalog
        if name in SOURCES:
            text = self.query_one(f"#{name}", Input).value
            if name == "model":
                return check_model(text, catalog.models)
            return check_text(text, catalog.texts)
        if name in ("method", "device"):
            return self.query_one(f"#{name}", Select).value, "", ""
        if name == "proxy_every":
            if not self.query_one("#proxy-on", Checkbox).value:
                return 0, "", "off"
            value, problem, _ = NUMBER_CHECKERS[name](self.query_one("#proxy_every", Input).value)
            if not problem and value < 1:
                problem = "proxy every must be a whole number >= 1 (or switch it off)"
            return value, problem, "" if problem else "cheap perplexity during the run"
        return NUMBER_CHECKERS[name](self.query_one(f"#{name}", Input).value)

    def revalidate(self) -> RunConfig | None:
        """Check every field, show the reasons, update the pre-flight line.

        Returns:
            The config the form describes, or None when a field is invalid.
        """
        names = [*SOURCES, "method", *NUMBERS, "device", "proxy_every"]
        self.problems = {}
        self.values = {}
        hints: dict[str, str] = {}
        for name in names:
            value, problem, hint = self._check(name)
            self.values[name] = value
            hints[name] = hint
            if problem:
                self.problems[name] = problem
        pattern = self.values.get("pattern")
        if "weight_sparsity" not in self.problems and pattern not in (None, "unstructured"):
            hints["weight_sparsity"] = f"ignored: the {pattern} pattern sets the sparsity"
        if self.values.get("method") == "dense":
            hints["weight_sparsity"] = "ignored: the dense method prunes no weights"
        config = self._config()
        for name in names:
            self._show_reason(name, self.problems.get(name, ""), hints.get(name, ""))
        device = str(self.values.get("device") or "cpu")
        if device == "auto":
            device = "cuda" if "cuda" in self.duo.catalog.devices else "cpu"
        first = next(iter(self.problems.values()), "")
        self.query_one(PreflightLine).show(config, device, first)
        return config

    def _config(self) -> RunConfig | None:
        """The form's config (the App's initial config with the form's fields), or None."""
        if self.problems:
            return None
        try:
            return self.duo.initial_config.replace(**self.values).validate()
        except InputError as error:  # a rule that spans fields
            self.problems["form"] = str(error)
            return None

    def _show_reason(self, name: str, problem: str, hint: str) -> None:
        """Show the problem (or the hint) next to field ``name`` and mark its input."""
        reason = self.query_one(f"#reason-{name}", Static)
        reason.update(problem or hint)
        reason.set_class(bool(problem), "-error")
        for widget in self.query_one(f"#row-{name}").query(Input):
            widget.set_class(bool(problem), "-bad")

    # ----------------------------------------------------------------------------- start

    def action_start(self) -> None:
        """Start the run with the form's config (refused with a reason if a field is invalid)."""
        config = self.revalidate()
        if config is None:
            name, problem = next(iter(self.problems.items()))
            self.duo.start_error = f"cannot start: {problem}"
            if name != "form":
                self.query_one(f"#{name}").focus()
            return
        self.duo.start_run(config)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Start is shown dimmed while a run is in progress."""
        if action == "start" and self.duo.run_active:
            return None
        return True

    def _show_start_error(self, error: str) -> None:
        """Show the App's one-line refusal (or hide the line)."""
        line = self.query_one("#start-error", Static)
        line.update(error)
        line.set_class(not error, "-empty")

    def _apply_catalog(self, catalog: Catalog) -> None:
        """The catalog arrived: offer its models, texts and devices."""
        for name in SOURCES:
            select = self.query_one(f"#{name}-choice", Select)
            choices = catalog.model_choices() if name == "model" else catalog.text_choices()
            value = self.query_one(f"#{name}", Input).value.strip()
            self._choices[name] = {v for _, v in choices}
            with select.prevent(Select.Changed):
                select.set_options(choices)
                if value in {v for _, v in choices}:
                    select.value = value
            self.query_one(f"#{name}", Input).suggester = SuggestFromList(
                [v for _, v in choices], case_sensitive=True
            )
        device = self.query_one("#device", Select)
        current = device.value
        devices = list(catalog.devices)
        if isinstance(current, str) and current not in devices:
            devices.append(current)
        with device.prevent(Select.Changed):
            device.set_options([(d, d) for d in devices])
            device.value = current
        self.revalidate()
