"""The setup screen: choose the model, data, method and sparsities, then start the run.

Every field is checked as it changes (:mod:`screens.setup_fields`, which defers to
``RunConfig.validate`` and ``parse_pattern``) and the reason appears next to it. A moment after
the last change, a worker runs the pre-flight's file and machine checks
(:func:`~screens.setup_fields.inspect_inputs`: is the folder a causal LM, is the text file
readable UTF-8, does ``seqlen`` fit the model's context, is CUDA there) and the estimate of
memory and time (:func:`~duogpt_tui.widgets.preflight.estimate_lines`, the same line as
``duogpt prune``); its problems appear next to their fields too. ``ctrl+r`` starts nothing while
any field has a problem; otherwise the App runs the full pre-flight check and shows its one-line
refusal here (:attr:`DuoGPTApp.start_error`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from duogpt_tui.widgets.preflight import EstimateLines, PreflightLine, estimate_lines
from screens.catalog import Catalog
from screens.dialogs import FilePickerDialog
from screens.setup_fields import (
    CHOICE_FIELDS,
    DEEP_INPUTS,
    NUMBER_CHECKERS,
    Check,
    check_choice,
    check_model,
    check_text,
    inspect_inputs,
)
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
    "damping": ("Damping", "relative Hessian damping, e.g. 0.01"),
    "nsamples": ("Calibration samples", "sequences"),
    "seqlen": ("Sequence length", "tokens per sample and per evaluation window"),
    "eval_windows": ("Evaluation windows", "0 skips perplexity"),
    "seed": ("Seed", "seeds sampling and everything random"),
}
"""The typed fields, with their labels and placeholders."""

CHOICES = {
    "act_rule": (
        "Activation rule",
        {"topk": "topk (per token)", "threshold": "threshold (calibrated)"},
    ),
    "dtype": (
        "Model dtype",
        {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"},
    ),
}
"""The fields picked from a list (besides method and device), with their labels and choices."""

FIELDS = (
    *SOURCES,
    "method",
    "pattern",
    "weight_sparsity",
    "act_sparsity",
    "act_rule",
    "alpha",
    "damping",
    "nsamples",
    "seqlen",
    "eval_windows",
    "seed",
    "device",
    "dtype",
    "proxy_every",
)
"""Every field, in form order (the first problem in this order is the one start reports)."""

CHECK_DELAY = 0.3
"""Seconds after the last change before the file and machine checks run (on a worker)."""

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
            for name in FIELDS:
                if name in SOURCES:
                    yield from self._source_row(
                        name, SOURCES[name], str(getattr(config, name)), catalog
                    )
                elif name == "method":
                    yield self._select_row(
                        name, "Method", [(METHOD_LABELS.get(m, m), m) for m in METHODS]
                    )
                elif name == "device":
                    yield self._select_row(name, "Device", [(d, d) for d in catalog.devices])
                elif name in CHOICES:
                    label, choices = CHOICES[name]
                    yield self._select_row(name, label, [(v, k) for k, v in choices.items()])
                elif name == "proxy_every":
                    yield self._proxy_row(config)
                else:
                    label, placeholder = NUMBERS[name]
                    field = Input(
                        str(getattr(config, name)),
                        placeholder=placeholder,
                        compact=True,
                        id=name,
                        classes="field-input",
                        suggester=PATTERN_SUGGESTIONS if name == "pattern" else None,
                    )
                    yield self._row(name, label, field)
        yield PreflightLine(id="preflight")
        yield Static("", id="start-error", markup=False)
        yield Footer()

    def _select_row(self, name: str, label: str, options: list[tuple[str, str]]) -> Horizontal:
        """A row with a list to pick from; a prefilled value that is not offered is added."""
        value = str(getattr(self.duo.initial_config, name))
        if value not in {v for _, v in options}:
            options = [*options, (value, value)]  # shown, and its problem next to it
        select = Select(options, value=value, allow_blank=False, compact=True, id=name)
        return self._row(name, label, select)

    def _proxy_row(self, config: RunConfig) -> Horizontal:
        """The proxy-perplexity toggle and its block count."""
        every = config.proxy_every or PROXY_DEFAULT
        return self._row(
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
    @on(Select.Changed, "#method, #device, #act_rule, #dtype")
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        """Any field changed: check the form again (a refusal to start is about the old values)."""
        if self.duo.start_error:
            self.duo.start_error = ""
        self.query_one("#proxy_every", Input).disabled = not self.query_one(
            "#proxy-on", Checkbox
        ).value
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
        if name in ("method", "device", *CHOICE_FIELDS):
            return check_choice(name, self.query_one(f"#{name}", Select).value)
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
        if method != "duogpt":
            hints["alpha"] = "ignored: only duogpt uses alpha"
        if method not in ("duogpt", "sparsegpt"):
            hints["damping"] = "ignored: only duogpt and sparsegpt solve with damping"
        if values.get("dtype") in ("bfloat16", "float16"):
            hints["dtype"] = "weights in half precision; the solver's math stays float32"
        return hints

    def _deep_problems(self) -> dict[str, str]:
        """The last file/machine check's problems that still hold for the fields' values."""
        if self.inspected is None:
            return {}
        checked, problems = self.inspected
        return {
            name: problem
            for name, problem in problems.items()
            if all(self.values.get(read) == getattr(checked, read) for read in DEEP_INPUTS[name])
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
        if event.state != WorkerState.SUCCESS:
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
