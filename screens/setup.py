"""The setup screen: choose the model, data, method and sparsities, then start the run.

The form is built from the option registry: one row per option that declares a place on it
(:data:`screens.setup_fields.FORM`), with the widget its kind asks for. Every field is checked as
it changes (:mod:`screens.setup_fields`, which parses and validates through the registry, as
``duogpt prune`` does) and the reason appears next to it. A moment after the last change, a
worker runs the pre-flight's file and machine checks
(:func:`~screens.setup_fields.inspect_inputs`: is the folder a causal LM, is the text file
readable UTF-8 and long enough, does ``seqlen`` fit the model's context, is CUDA there) and the
estimate of memory and time (:func:`duogpt_tui.preflight_text.estimate_lines`, the same lines
``duogpt prune`` prints); its problems appear next to their fields too. ``ctrl+r`` starts nothing
while any field has a problem; otherwise the App runs the full pre-flight check and shows its
one-line refusal here (:attr:`DuoGPTApp.start_error`), as it does when a run is already going.

The weight pattern is a list of presets (``unstructured``, ``2:4``, ``4:8``) and ``custom``,
which reveals a text field for any N:M, checked as you type like the other fields. The model's
hint names its family when the field points at a local folder (from its ``config.json``), and
the groups of layers that share an input when the run shown used that model.

Under the form, a line describes the focused field (its label, the registry's help, its hint
or problem) and the Start button stands next to the pre-flight estimate. On a narrow terminal
(less than :data:`NARROW` columns) the fields shrink, the browse buttons stay, and the hints
beside the fields give way to that line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from duogpt_tui.preflight_text import EstimateLines, estimate_lines
from duogpt_tui.widgets.preflight import PreflightLine
from screens.base import WorkbenchScreen
from screens.catalog import Catalog
from screens.dialogs import FilePickerDialog
from screens.setup_fields import (
    CUSTOM,
    DEEP_INPUTS,
    FIELDS,
    FORM,
    PRESETS,
    SELECTS,
    SOURCES,
    Check,
    check_choice,
    check_model,
    check_preset,
    check_text,
    check_toggled,
    check_typed,
    field_kind,
    form_field,
    inspect_inputs,
    preset_choices,
    preset_of,
)
from solver.config import OPTION, RunConfig
from solver.errors import InputError
from solver.options import Option, Surface

CHECK_DELAY = 0.3
"""Seconds after the last change before the file and machine checks run (on a worker)."""

SELECTED = ", ".join(f"#{name}" for name in SELECTS)
"""The lists whose change revalidates the form."""

TOGGLES = tuple(spec.name for spec in FORM if field_kind(spec) == "toggle")
"""The numbers switched on and off by a checkbox."""

NARROW = 120
"""Below this many columns the form is compact (see the module text)."""


class SetupScreen(WorkbenchScreen):
    """The form that makes a :class:`~solver.config.RunConfig` and starts the run."""

    CSS_PATH = "setup.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "start", "Start", tooltip="Pre-flight check, then start pruning"),
        Binding("ctrl+o", "browse", "Browse", tooltip="Pick a model folder or text file"),
    ]

    def __init__(self) -> None:
        """Create the screen; the form is filled from the App's initial config on compose.

        Attributes:
            problems: the one-line problem of each invalid field (``form`` for a rule that
                spans fields), from the checks as you type and the last file/machine check.
            values: each field's parsed value (None where it could not be parsed).
            inspected: the config of the last file/machine check and its problems by field.
            estimate: the config of the last estimate and its lines.
        """
        super().__init__()
        self.problems: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.inspected: tuple[RunConfig, dict[str, str]] | None = None
        self.estimate: tuple[RunConfig, EstimateLines] | None = None
        self._browse_target = "model"
        self._choices: dict[str, set[str]] = {}
        self._check_timer: Timer | None = None
        self._layout_seen = ""
        self._ready = False

    # ----------------------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        """The form, the pre-flight line and the start error line."""
        config = self.app.initial_config
        yield Header()
        with VerticalScroll(id="setup-form"):
            for spec in FORM:
                kind = field_kind(spec)
                if kind == "source":
                    yield self._source_row(spec, str(getattr(config, spec.name)), self.app.catalog)
                elif kind == "select":
                    yield self._select_row(spec)
                elif kind == "preset":
                    yield self._preset_row(spec, str(getattr(config, spec.name)))
                elif kind == "toggle":
                    yield self._toggle_row(spec, getattr(config, spec.name))
                else:
                    yield self._input_row(spec, str(getattr(config, spec.name)))
        yield Static("", id="field-help", markup=False)
        with Horizontal(id="setup-actions"):
            yield Button("Start run", id="start-button", variant="success", compact=True)
            yield PreflightLine(id="preflight")
        yield Static("", id="start-error", markup=False)
        yield Footer()

    def _choices_of(self, spec: Option) -> list[tuple[str, str]]:
        """What a list offers: ``(label, value)`` pairs (the devices: what the machine has)."""
        if form_field(spec.name).picker == "devices":
            return [(device, device) for device in self.app.catalog.devices]
        labels = form_field(spec.name).choice_labels or spec.choices
        return list(zip(labels, spec.choices, strict=True))

    def _select_row(self, spec: Option) -> Horizontal:
        """A row with a list to pick from; a prefilled value that is not offered is added."""
        options = self._choices_of(spec)
        value = str(getattr(self.app.initial_config, spec.name))
        if value not in {v for _, v in options}:
            options = [*options, (value, value)]  # shown, and its problem next to it
        select = Select(options, value=value, allow_blank=False, compact=True, id=spec.name)
        return self._row(spec.name, form_field(spec.name).label, select)

    def _input_row(self, spec: Option, value: str) -> Horizontal:
        """A row with a typed value."""
        form = form_field(spec.name)
        field = Input(
            value,
            placeholder=form.placeholder,
            compact=True,
            id=spec.name,
            classes="field-input",
            suggester=SuggestFromList(form.suggestions) if form.suggestions else None,
        )
        return self._row(spec.name, form.label, field)

    def _preset_row(self, spec: Option, value: str) -> Horizontal:
        """A list of presets and ``custom``, and the text field that ``custom`` reveals."""
        form = form_field(spec.name)
        choice = preset_of(spec.name, value)
        return self._row(
            spec.name,
            form.label,
            Select(
                preset_choices(spec.name),
                value=choice,
                allow_blank=False,
                compact=True,
                id=f"{spec.name}-preset",
                classes="preset",
            ),
            Input(
                value,
                placeholder=form.placeholder,
                compact=True,
                id=spec.name,
                classes="field-input -custom" + ("" if choice == CUSTOM else " -hidden"),
            ),
        )

    def _toggle_row(self, spec: Option, value: int) -> Horizontal:
        """A checkbox that switches a number on (the typed value) and off (0)."""
        form = form_field(spec.name)
        return self._row(
            spec.name,
            form.label,
            Checkbox("every", value > 0, compact=True, id=f"{spec.name}-on", classes="toggle"),
            Input(
                str(value or form.toggle),
                compact=True,
                id=spec.name,
                classes="field-input -short",
                disabled=value == 0,
            ),
            Label(form.unit, classes="field-unit"),
        )

    def _row(self, name: str, label: str, *widgets: Widget) -> Horizontal:
        """One form row: label, widgets and the reason/hint line for field ``name``."""
        return Horizontal(
            Label(label, classes="field-label"),
            *widgets,
            Static("", id=f"reason-{name}", classes="reason", markup=False),
            classes="field-row",
            id=f"row-{name}",
        )

    def _source_row(self, spec: Option, value: str, catalog: Catalog) -> Horizontal:
        """A quick-pick list, the typed spec and a browse button for a model or text field."""
        name, form = spec.name, form_field(spec.name)
        choices = self._catalog_choices(name, catalog)
        values = [v for _, v in choices]
        self._choices[name] = set(values)
        return self._row(
            name,
            form.label,
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
                placeholder=form.placeholder,
                compact=True,
                id=name,
                classes="field-input -source",
                suggester=SuggestFromList(values, case_sensitive=True),
            ),
            Button("…", id=f"browse-{name}", compact=True, classes="browse"),
        )

    @staticmethod
    def _catalog_choices(name: str, catalog: Catalog) -> list[tuple[str, str]]:
        """The quick picks of a source field: the catalog's models or texts."""
        if form_field(name).picker == "models":
            return catalog.model_choices()
        return catalog.text_choices()

    def on_mount(self) -> None:
        """Validate the prefilled form, follow the App's start errors and catalog."""
        self.sub_title = "setup"
        self.watch(self.app, "start_error", self._show_start_error)
        self.watch(self.app, "catalog", self._apply_catalog, init=False)
        self.revalidate()
        self.query_one("#model-choice", Select).focus()
        self._ready = True

    # ----------------------------------------------------------------------------- events

    @on(Input.Changed)
    @on(Select.Changed, SELECTED)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        """Any field changed: check the form again (a refusal to start is about the old values)."""
        if self.app.start_error:
            self.app.start_error = ""
        for name in TOGGLES:
            on = self.query_one(f"#{name}-on", Checkbox).value
            self.query_one(f"#{name}", Input).disabled = not on
        self.revalidate()

    @on(Input.Changed, ".-source")
    def _source_typed(self, event: Input.Changed) -> None:
        """Keep the quick-pick list in step with a typed spec.

        The list is set without a ``Select.Changed``: that message would reach
        :meth:`_source_picked` after the keys typed meanwhile and put its value back into the
        field, eating what was typed (seen in tmux with fast typing).
        """
        assert event.input.id is not None
        select = self.query_one(f"#{event.input.id}-choice", Select)
        name = event.input.id
        target = event.value.strip() if event.value.strip() in self._choices[name] else Select.NULL
        if select.value != target:
            with select.prevent(Select.Changed):
                select.value = target

    @on(Select.Changed, ".preset")
    def _preset_picked(self, event: Select.Changed) -> None:
        """A preset fills the text field; ``custom`` reveals it (emptied of ``unstructured``)."""
        name = (event.select.id or "").removesuffix("-preset")
        field = self.query_one(f"#{name}", Input)
        if preset_of(name, field.value) == event.value:  # the list shows the field (on mount)
            return
        custom = event.value == CUSTOM
        field.set_class(not custom, "-hidden")
        if not custom:
            field.value = str(event.value)
        else:
            if field.value.strip() == PRESETS[name][0]:  # unstructured: no N:M to edit
                field.value = ""
            field.focus()
        self._changed()

    @on(Input.Changed, ".-custom")
    def _custom_typed(self, event: Input.Changed) -> None:
        """A value put into a hidden preset field (a prefill) picks its preset, or ``custom``.

        While ``custom`` is picked, what is typed stays custom, even a preset's value.
        """
        assert event.input.id is not None
        select = self.query_one(f"#{event.input.id}-preset", Select)
        if select.value != CUSTOM:
            self._set_preset(event.input.id, event.value)

    def _set_preset(self, name: str, text: str) -> None:
        """Pick the preset that ``text`` is (or ``custom``) without a ``Select.Changed``."""
        select = self.query_one(f"#{name}-preset", Select)
        choice = preset_of(name, text)
        if select.value != choice:
            with select.prevent(Select.Changed):
                select.value = choice
        self.query_one(f"#{name}", Input).set_class(choice != CUSTOM, "-hidden")

    @on(Select.Changed, ".source-choice")
    def _source_picked(self, event: Select.Changed) -> None:
        """A pick from the list fills the typed spec."""
        if event.value is Select.NULL:
            return
        name = (event.select.id or "").removesuffix("-choice")
        field = self.query_one(f"#{name}", Input)
        if field.value != event.value:
            field.value = str(event.value)

    def on_resize(self, event: events.Resize) -> None:
        """A compact form on a narrow terminal."""
        self.set_class(event.size.width < NARROW, "-compact")

    @on(Button.Pressed, "#start-button")
    def _start_pressed(self) -> None:
        """The Start button starts the run (as ctrl+r)."""
        self.action_start()

    @on(events.DescendantFocus)
    def _focus_moved(self) -> None:
        """Describe the newly focused field on the help line."""
        self._describe_focused()

    def focused_field(self) -> str | None:
        """The form field that has focus (None when focus is elsewhere)."""
        widget = self.focused
        while widget is not None:
            if widget.id and widget.id.startswith("row-"):
                return widget.id.removeprefix("row-")
            parent = widget.parent
            widget = parent if isinstance(parent, Widget) else None
        return None

    def _describe_focused(self) -> None:
        """The help line: the focused field's label, help, and its problem or hint."""
        name = self.focused_field()
        line = self.query_one("#field-help", Static)
        if name is None:
            line.update("ctrl+r or the Start button starts the run · ctrl+o browses for a file")
            line.remove_class("-error")
            return
        spec = OPTION[name]
        reason = self.query_one(f"#reason-{name}", Static)
        problem = self.problems.get(name, "")
        note = problem or str(reason.content)
        text = f"{form_field(name).label}: {spec.help_on(Surface.SETUP)}"
        line.update(f"{text} — {note}" if note else text)
        line.set_class(bool(problem), "-error")

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

        models = form_field(target).picker == "models"
        what = "a model folder or .gguf file" if models else "a .txt or .jsonl file"
        self.app.push_screen(FilePickerDialog(f"{SOURCES[target]}: pick {what}", root), chosen)

    # ----------------------------------------------------------------------------- checks

    def _check(self, name: str) -> Check:
        """Check one field from its widget."""
        kind = field_kind(OPTION[name])
        if kind == "source":
            text = self.query_one(f"#{name}", Input).value
            if form_field(name).picker == "models":
                return check_model(text, self.app.catalog.models)
            return check_text(text, self.app.catalog.texts)
        if kind == "select":
            return check_choice(name, self.query_one(f"#{name}", Select).value)
        if kind == "preset":
            choice = self.query_one(f"#{name}-preset", Select).value
            return check_preset(name, choice, self.query_one(f"#{name}", Input).value)
        if kind == "toggle":
            on = self.query_one(f"#{name}-on", Checkbox).value
            return check_toggled(name, on, self.query_one(f"#{name}", Input).value)
        return check_typed(name, self.query_one(f"#{name}", Input).value)

    def revalidate(self) -> RunConfig | None:
        """Check every field, show the reasons, update the pre-flight line.

        The checks as you type run here; the file and machine checks of a new config are
        scheduled on a worker (:meth:`_inspect`), whose problems are kept for as long as the
        fields they read keep their values (:data:`~screens.setup_fields.DEEP_INPUTS`).

        Returns:
            The config the form describes, or None when a field is invalid.
        """
        self.problems = {}
        self.values = {}
        hints: dict[str, str] = {}
        for name in FIELDS:
            value, problem, hint = self._check(name)
            self.values[name] = value
            hints[name] = hint
            if problem:
                self.problems[name] = problem
        hints.update(self._hints())
        if "model" not in self.problems:
            hints["model"] = self._model_hint(hints.get("model", ""))
        config = self._config()
        deep = self._deep_problems()
        merged: dict[str, str] = {}
        for name in FIELDS:
            problem = self.problems.get(name) or deep.get(name, "")
            self._show_reason(name, problem, hints.get(name, ""))
            if problem:
                merged[name] = problem
        if "form" in self.problems:
            merged["form"] = self.problems["form"]
        self.problems = merged
        self._update_preflight(config)
        if self.is_mounted:
            self._describe_focused()
        return config if not merged else None

    def _hints(self) -> dict[str, str]:
        """Muted hints for fields that the other fields make irrelevant."""
        values = self.values
        method = values.get("method")
        hints: dict[str, str] = {}
        pattern = values.get("pattern")
        if "weight_sparsity" not in self.problems and pattern not in (None, "unstructured"):
            hints["weight_sparsity"] = f"ignored: the {pattern} pattern sets the sparsity"
        if method == "dense":
            hints["weight_sparsity"] = "ignored: the dense method prunes no weights"
        if values.get("act_sparsity") == 0:
            hints["act_rule"] = "ignored: activation sparsity is off"
        if values.get("eval_windows") == 0:
            hints["eval_windows"] = "0 skips the evaluation: no perplexity will be measured"
        if method != "duogpt":
            hints["alpha"] = "ignored: only duogpt uses alpha"
        if method not in ("duogpt", "sparsegpt"):
            hints["damping"] = "ignored: only duogpt and sparsegpt solve with damping"
        if values.get("dtype") in ("bfloat16", "float16"):
            hints["dtype"] = "weights in half precision; the solver's math stays float32"
        return hints

    def _model_hint(self, hint: str) -> str:
        """The model's hint, with the groups discovery found when the run shown used this model
        (``local model folder · llama: 2 blocks in model.layers; groups [...] → [...]``)."""
        log = self.app.event_log
        self._layout_seen = log.layout
        if not log.layout or str(log.config.get("model", "")) != self.values.get("model"):
            return hint
        hint = hint.removesuffix(f" · {log.family}")
        layout = log.layout.replace(" -> ", " → ")
        return f"{hint} · {layout}" if hint else layout

    def on_screen_resume(self) -> None:
        """Shown again: a run may have told the model's groups meanwhile."""
        if self._ready and self.app.event_log.layout != self._layout_seen:
            self.revalidate()

    def _deep_problems(self) -> dict[str, str]:
        """The last file/machine check's problems that still hold for the fields' values."""
        if self.inspected is None:
            return {}
        checked, problems = self.inspected
        initial = self.app.initial_config
        return {
            name: problem
            for name, problem in problems.items()
            if all(
                self.values.get(read, getattr(initial, read)) == getattr(checked, read)
                for read in DEEP_INPUTS[name]
            )
        }

    def _update_preflight(self, config: RunConfig | None) -> None:
        """The pre-flight line: a problem, the estimate, or (dimmed) the last one while checking."""
        line = self.query_one(PreflightLine)
        if self._check_timer is not None:
            self._check_timer.stop()
            self._check_timer = None
        if self.problems:
            line.show_problem(next(iter(self.problems.values())))
        elif self.estimate is not None and self.estimate[0] == config:
            line.show_estimate(self.estimate[1])
        else:
            line.show_pending()
        checked = self.inspected is not None and self.inspected[0] == config
        if config is not None and not checked:
            self._check_timer = self.set_timer(CHECK_DELAY, lambda: self._inspect(config))

    @work(
        thread=True,
        exclusive=True,
        exit_on_error=False,
        group="setup-check",
        description="check the model, texts and device",
    )
    def _inspect(self, config: RunConfig) -> tuple[RunConfig, dict[str, str], EstimateLines | None]:
        """The file and machine checks and the estimate of ``config`` (no widgets here)."""
        problems = inspect_inputs(config)
        lines = None
        if "device" not in problems:
            try:
                lines = estimate_lines(config)
            except InputError as error:
                problems["device"] = str(error)
        return config, problems, lines

    @on(Worker.StateChanged)
    def _check_done(self, event: Worker.StateChanged) -> None:
        """A check finished: keep its answer and show it (if the form still says the same)."""
        if event.worker.group != "setup-check":
            return
        if event.state == WorkerState.ERROR:  # a bug in a check: say so, do not block a start
            self.query_one(PreflightLine).show_problem(
                f"the check failed ({type(event.worker.error).__name__}: {event.worker.error}); "
                "the pre-flight check runs again at start"
            )
            return
        if event.state != WorkerState.SUCCESS or event.worker.result is None:
            return
        config, problems, lines = event.worker.result
        self.inspected = (config, problems)
        if lines is not None:
            self.estimate = (config, lines)
        self.revalidate()

    def _config(self) -> RunConfig | None:
        """The form's config (the App's initial config with the form's fields), or None."""
        if self.problems:
            return None
        try:
            return self.app.initial_config.replace(**self.values).validate()
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

    def fill(self, config: RunConfig) -> None:
        """Put ``config`` into every field (the run's settings, to change and start again)."""
        for spec in FORM:
            name, value = spec.name, getattr(config, spec.name)
            kind = field_kind(spec)
            if kind == "select":
                select = self.query_one(f"#{name}", Select)
                if value not in {v for _, v in self._choices_of(spec)}:
                    select.set_options([*self._choices_of(spec), (str(value), value)])
                select.value = value
            elif kind == "toggle":
                self.query_one(f"#{name}-on", Checkbox).value = value > 0
                self.query_one(f"#{name}", Input).value = str(value or form_field(name).toggle)
            elif kind == "preset":
                self._set_preset(name, str(value))
                self.query_one(f"#{name}", Input).value = str(value)
            else:
                self.query_one(f"#{name}", Input).value = str(value)
        self.revalidate()

    # ----------------------------------------------------------------------------- start

    def action_start(self) -> None:
        """Start the run with the form's config (refused with a reason if a field is invalid,
        or while a run is in progress)."""
        if self.app.run_active:
            self.app.start_error = self.app.busy_reason()
            return
        config = self.revalidate()
        if config is None:
            name, problem = next(iter(self.problems.items()))
            self.app.start_error = f"cannot start: {problem}"
            if name != "form":
                self.query_one(f"#{name}").focus()
            return
        self.app.start_run(config)

    def _show_start_error(self, error: str) -> None:
        """Show the App's one-line refusal (or hide the line)."""
        line = self.query_one("#start-error", Static)
        line.update(error)
        line.set_class(not error, "-empty")

    def _apply_catalog(self, catalog: Catalog) -> None:
        """The catalog arrived: offer its models, texts and devices."""
        for name in SOURCES:
            select = self.query_one(f"#{name}-choice", Select)
            choices = self._catalog_choices(name, catalog)
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
