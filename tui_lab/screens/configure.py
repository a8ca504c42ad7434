"""The run form: every setting, checked as it is typed, with what the run will cost.

The form holds the user's text in a `RunSettings` and asks the engine's own checks about it,
so a mistake gets the same message here as on the command line, before anything starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from tui_lab.assets_dir import ASSETS
from tui_lab.engine.errors import LabError
from tui_lab.engine.machine.discovery import (
    check_model,
    default_model_path,
    find_nginx,
    find_server,
)
from tui_lab.engine.machine.preflight import largest
from tui_lab.engine.plan.config import exposure_warning
from tui_lab.engine.plan.runs import Plan
from tui_lab.engine.settings.presets import delete_preset, load_presets, save_last, save_preset
from tui_lab.engine.settings.run_settings import (
    RELEVANT,
    RUN_KINDS,
    RunSettings,
    build_plan,
    estimate,
    field_error,
    model_entries,
)
from tui_lab.screens.model_picker import ModelPicker

Field = Input | Select[str] | Checkbox

GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Run",
        (
            ("instances", "Instances"),
            ("parallel", "Parallel slots"),
            ("concurrency", "Concurrency"),
            ("n_predict", "n_predict"),
            ("threads", "Threads"),
            ("threads_http", "HTTP threads"),
            ("placement", "Placement"),
            ("gpus", "GPUs"),
            ("batch_size", "Batch size"),
            ("ubatch_size", "Ubatch size"),
            ("balance", "Balance"),
            ("plateau", "Plateau % (stop)"),
            ("finalists", "Finalists"),
            ("max_p99_ms", "Max p99 latency ms"),
            ("max_ttft_ms", "Max p99 TTFT ms"),
        ),
    ),
    (
        "Load",
        (
            ("api", "API"),
            ("requests", "Requests"),
            ("requests_per_client", "Requests/client"),
            ("request_timeout", "Request timeout s"),
            ("stream", "Stream tokens"),
            ("allow_eos", "Allow early stop (EOS)"),
            ("cache_prompt", "Cache the prompt"),
        ),
    ),
    (
        "Servers",
        (
            ("ctx_per_slot", "Context per slot"),
            ("server_args", "Extra server args"),
            ("server_dim", "Server-flag dims"),
            ("ready_timeout", "Ready timeout s"),
            ("stop_on_error", "Stop the sweep at the first failed cell"),
            ("upstream_keepalive", "nginx upstream keep-alive"),
            ("detach", "Detached: the run goes on without this terminal"),
        ),
    ),
    (
        "Where and how",
        (
            ("model", "Model"),
            ("server_bin", "llama-server"),
            ("nginx_bin", "nginx"),
            ("host", "Bind address"),
            ("base_port", "Base port"),
            ("nginx_port", "nginx port"),
            ("results", "Results folder"),
            ("api_key", "API key"),
        ),
    ),
)
# The menus' choices; anything else in a preset is reported and replaced by the default.
CHOICES: dict[str, list[tuple[str, str]]] = {
    "kind": [(label, kind) for kind, label in RUN_KINDS.items()],
    "api": [("completion (/completion)", "completion"), ("chat (/v1/chat/completions)", "chat")],
}
PLACEHOLDERS = {
    "threads": "auto (cores split among instances), default, or a number",
    "placement": "shared, pinned (own cores), spread (own GPU), pinned+spread",
    "gpus": "all, or GPU numbers like 0,1",
    "server_dim": "e.g. -fa on|-fa off ; -ctk f16|-ctk q8_0",
    "threads_http": "default, or a number",
    "requests": "blank: concurrency x requests/client",
    "ctx_per_slot": "blank: enough for prompt + n_predict",
    "server_args": "e.g. --flash-attn on -ngl 99",
    "model": "blank: the bundled default model; full sweeps: a.gguf|b.gguf",
    "server_bin": "blank: LLAMA_SERVER_BIN, PATH or the bundled build",
    "nginx_bin": "blank: NGINX_BIN or PATH",
    "api_key": "blank: no key",
    "max_p99_ms": "blank: no bound",
    "max_ttft_ms": "blank: no bound (needs streaming)",
}
# Paths the engine checks only when a run starts; checking them as typed saves a failed start.
PATH_CHECKS: dict[str, Callable[[str], object]] = {
    "model": lambda text: [check_model(entry) for entry in model_entries(text) if entry],
    "server_bin": find_server,
    "nginx_bin": find_nginx,
}
# The fields some kinds ignore: hidden for those kinds so that the form shows what the run uses.
DIMENSIONS = set().union(*RELEVANT.values())


class ConfigureScreen(Screen[RunSettings | None]):
    CSS_PATH = ASSETS / "configure.tcss"
    AUTO_FOCUS = ""  # on_mount focuses the kind without scrolling the presets out of sight
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+s", "run", "Run"),
    ]

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        self.settings = settings
        self._fields: dict[str, Field] = {}
        self._presets: dict[str, RunSettings] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="form"):
            yield Label("Presets", classes="group")
            with Horizontal(classes="row"):
                yield Select[str]([], prompt="Load a preset", id="preset-list", compact=True)
                yield Input(placeholder="name to save as", id="preset-name", compact=True)
                yield Button("Save preset", id="preset-save", compact=True)
                yield Button("Delete", id="preset-delete", compact=True)
            for title, names in GROUPS:
                yield Label(title, classes="group")
                if title == "Run":
                    yield self._row("kind", None)
                for name, label in names:
                    yield self._row(name, label)
        with Horizontal(id="summary"):
            yield Static(id="estimate")
            yield Button("Run", variant="primary", id="run", compact=True)
        yield Footer()

    def _field(self, name: str) -> Field:
        """A blank widget for one setting; `_fill` puts the values in."""
        widget: Field
        if name in CHOICES:
            widget = Select(CHOICES[name], allow_blank=False, id=name, compact=True)
        elif isinstance(getattr(self.settings, name), bool):
            widget = Checkbox(id=name, compact=True)
        else:
            widget = Input(
                placeholder=PLACEHOLDERS.get(name, ""),
                password=name == "api_key",
                id=name,
                compact=True,
            )
        widget.add_class("setting")
        self._fields[name] = widget
        return widget

    def _row(self, name: str, label: str | None) -> Vertical:
        """The field, its label (the kind's menu entries are labels enough) and its message."""
        widget = self._field(name)
        if label is None:
            line = Horizontal(widget, classes="row")
        elif isinstance(widget, Checkbox):
            widget.label = label
            line = Horizontal(widget, classes="row")
        elif name == "model":
            browse = Button("Browse…", id="browse", compact=True)
            line = Horizontal(Label(label), widget, browse, classes="row")
        else:
            line = Horizontal(Label(label), widget, classes="row")
        return Vertical(line, Static(id=f"error-{name}", classes="error"), id=f"field-{name}")

    def on_mount(self) -> None:
        self._reload_presets()
        self._fill(self.settings)
        self._check()
        self.set_focus(self._fields["kind"], scroll_visible=False)

    def _fill(self, settings: RunSettings) -> None:
        """Show `settings`; a kind or API the menus do not offer is reported, then defaulted."""
        for name in CHOICES:
            if problem := field_error(settings, name):
                self.notify(problem, severity="error", timeout=10)
                settings = settings.with_values(**{name: getattr(RunSettings(), name)})
        for name, widget in self._fields.items():
            widget.value = getattr(settings, name)

    def _current(self) -> RunSettings:
        return RunSettings(**{name: widget.value for name, widget in self._fields.items()})

    @on(Input.Changed, ".setting")
    @on(Select.Changed, ".setting")
    @on(Checkbox.Changed, ".setting")
    def _changed(self) -> None:
        self._check()

    def _check(self) -> bool:
        """Mark every bad field, show the plan's size or its first problem; True when runnable."""
        settings = self._current()
        for name in DIMENSIONS:
            self.query_one(f"#field-{name}").display = name in RELEVANT[settings.kind]
        problems = [p for name in self._fields if (p := self._mark(settings, name))]
        misfit = None
        try:
            plan = build_plan(settings)
            summary = estimate(plan)
            misfit = _misfit(settings, plan)
        except LabError as exc:
            problems.insert(0, str(exc))
        line = self.query_one("#estimate", Static)
        _show(line, problems[0] if problems else summary + (f"; {misfit}" if misfit else ""))
        line.set_class(bool(problems or misfit), "-error")
        self.query_one("#run", Button).disabled = bool(problems)
        return not problems

    def _mark(self, settings: RunSettings, name: str) -> str | None:
        problem = _problem(settings, name)
        self._fields[name].set_class(problem is not None, "-invalid")
        warning = exposure_warning(settings.host, settings.api_key) if name == "host" else None
        error = self.query_one(f"#error-{name}", Static)
        _show(error, problem or warning or "")
        error.set_class(problem is None and warning is not None, "-warning")
        error.display = bool(problem or warning)
        return problem

    @on(Input.Submitted, ".setting")
    def _next_field(self) -> None:
        """Enter moves on, as in most forms; running is a deliberate ctrl+s or the Run button."""
        self.focus_next()

    @on(Button.Pressed, "#run")
    def action_run(self) -> None:
        # Re-check now: a key typed just before ctrl+s may not have been checked yet.
        if not self._check():
            self.app.bell()
            return
        settings = self._current()
        try:
            save_last(settings)
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=10)
        self.dismiss(settings)

    def action_back(self) -> None:
        self.dismiss(None)

    # ---- presets ----------------------------------------------------------------------------

    def _reload_presets(self) -> None:
        try:
            self._presets = load_presets()
        except LabError as exc:
            self._presets = {}
            self.notify(str(exc), severity="error", timeout=15)
        self.query_one("#preset-list", Select).set_options((n, n) for n in self._presets)

    @on(Select.Changed, "#preset-list")
    def _load_preset(self, event: Select.Changed) -> None:
        if event.value in self._presets:
            name = cast(str, event.value)
            self._fill(self._presets[name])
            self.query_one("#preset-name", Input).value = name

    @on(Button.Pressed, "#preset-save")
    @on(Input.Submitted, "#preset-name")
    def _save_preset(self) -> None:
        name = self.query_one("#preset-name", Input).value
        try:
            path = save_preset(name, self._current())
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.notify(f"preset {name.strip()!r} saved in {path}")
        self._reload_presets()

    @on(Button.Pressed, "#preset-delete")
    def _delete_preset(self) -> None:
        chosen = self.query_one("#preset-list", Select).value
        if chosen not in self._presets:
            self.notify("choose the preset to delete in the list first", severity="warning")
            return
        try:
            delete_preset(cast(str, chosen))
        except LabError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.notify(f"preset {chosen!r} deleted")
        self._reload_presets()

    # ---- model ------------------------------------------------------------------------------

    @on(Button.Pressed, "#browse")
    def _browse(self) -> None:
        self.app.push_screen(ModelPicker(), callback=self._model_chosen)

    def _model_chosen(self, path: Path | None) -> None:
        if path is not None:
            # After a trailing `|` the pick is one more model of a sweep over model files.
            current = str(self._fields["model"].value).rstrip()
            self._fields["model"].value = f"{current}{path}" if current.endswith("|") else str(path)
            self._fields["model"].focus()


def _show(static: Static, text: str) -> None:
    """Every update lays the whole screen out again; a keystroke usually changes no message."""
    if static.content != text:
        static.update(text)


def _misfit(settings: RunSettings, plan: Plan) -> str | None:
    """The memory pre-flight of the run's largest layout, when it does not fit (such cells are
    skipped, so the run may still be worth starting). Nothing when the model cannot be read:
    its field says why."""
    try:
        verdict = largest(default_model_path(), (cell.layout for cell in plan.cells))
    except LabError:
        return None
    return None if verdict.fits else f"largest layout does not fit: {verdict.summary()}"


def _problem(settings: RunSettings, name: str) -> str | None:
    """The engine's message for one field; typed paths are also looked at on disk."""
    text = getattr(settings, name)
    check = PATH_CHECKS.get(name)
    if check is None or not text:
        return field_error(settings, name)
    try:
        check(text)
    except LabError as exc:
        return str(exc)
    return None
