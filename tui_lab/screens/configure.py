"""The run form: every setting, checked as it is typed, with what the run will cost.

The form's rows come from the settings registry, and it holds the user's text in a
`RunSettings` and asks the engine's own checks about it, so a mistake gets the same message
here as on the command line, before anything starts. The checks build the plan, read the
model's header for the memory pre-flight and look at paths on disk: they run in a worker a
moment after the last keystroke, so typing never waits on the disk or NVML.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from textual import on, work
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
from tui_lab.engine.settings import registry
from tui_lab.engine.settings.presets import delete_preset, load_presets, save_last, save_preset
from tui_lab.engine.settings.registry import Setting
from tui_lab.engine.settings.run_settings import RunSettings, build_plan, estimate
from tui_lab.engine.settings.spec import context_of, field_error
from tui_lab.engine.settings.values import model_entries
from tui_lab.screens.model_picker import ModelPicker

Field = Input | Select[str] | Checkbox
# How long typing must pause before the form is checked: the check reads the disk and NVML.
CHECK_DELAY_S = 0.3
CHECK_GROUP = "form-check"

# Paths the engine checks only when a run starts; checking them as typed saves a failed start.
PATH_CHECKS: dict[str, Callable[[str], object]] = {
    "model": lambda text: [check_model(entry) for entry in model_entries(text) if entry],
    "server_bin": find_server,
    "nginx_bin": find_nginx,
}


@dataclass(frozen=True)
class Verdict:
    """What the checks found in one state of the form: each field's problem, the bind
    address's warning, and the summary line (the plan's size, or the first problem)."""

    problems: dict[str, str | None]
    warning: str | None
    line: str
    line_is_error: bool
    runnable: bool


def assess(settings: RunSettings) -> Verdict:
    """Every check of the form, off the event loop: no widget is touched here."""
    problems = {s.name: _problem(settings, s.name) for s in registry.settings()}
    listed = [p for p in problems.values() if p]
    misfit = summary = None
    try:
        plan = build_plan(settings)
        summary = estimate(plan)
        misfit = _misfit(plan)
    except LabError as exc:
        listed.insert(0, str(exc))
    line = listed[0] if listed else f"{summary}; {misfit}" if misfit else str(summary)
    return Verdict(
        problems,
        exposure_warning(settings.host, settings.api_key),
        line,
        line_is_error=bool(listed or misfit),
        runnable=not listed,
    )


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
        # Kept as built: messages that arrive while the app shuts down find them without a query.
        self._fields: dict[str, Field] = {}
        self._rows: dict[str, Vertical] = {}
        self._errors: dict[str, Static] = {}
        self._estimate = Static(id="estimate")
        self._run = Button("Run", variant="primary", id="run", compact=True)
        self._presets: dict[str, RunSettings] = {}

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="form"):
            yield Label("Presets", classes="group")
            with Horizontal(classes="row"):
                yield Select[str]([], prompt="Load a preset", id="preset-list", compact=True)
                yield Input(placeholder="name to save as", id="preset-name", compact=True)
                yield Button("Save preset", id="preset-save", compact=True)
                yield Button("Delete", id="preset-delete", compact=True)
            group = None
            for setting in registry.settings():
                if setting.group != group:
                    group = setting.group
                    yield Label(group, classes="group")
                yield self._row(setting)
        with Horizontal(id="summary"):
            yield self._estimate
            yield self._run
        yield Footer()

    def _field(self, setting: Setting) -> Field:
        """A blank widget for one setting; `_fill` puts the values in."""
        widget: Field
        if setting.choices:
            widget = Select(setting.choices, allow_blank=False, id=setting.name, compact=True)
        elif setting.is_switch:
            widget = Checkbox(id=setting.name, compact=True)
        else:
            widget = Input(
                placeholder=setting.placeholder,
                password=setting.secret,
                id=setting.name,
                compact=True,
            )
        widget.add_class("setting")
        self._fields[setting.name] = widget
        return widget

    def _row(self, setting: Setting) -> Vertical:
        """The field, its label (the kind's menu entries are labels enough) and its message."""
        widget, name, label = self._field(setting), setting.name, setting.label
        if not label:
            line = Horizontal(widget, classes="row")
        elif isinstance(widget, Checkbox):
            widget.label = label
            line = Horizontal(widget, classes="row")
        elif name == "model":
            browse = Button("Browse…", id="browse", compact=True)
            line = Horizontal(Label(label), widget, browse, classes="row")
        else:
            line = Horizontal(Label(label), widget, classes="row")
        self._errors[name] = Static(id=f"error-{name}", classes="error")
        self._rows[name] = Vertical(line, self._errors[name], id=f"field-{name}")
        return self._rows[name]

    def on_mount(self) -> None:
        self._reload_presets()
        self._fill(self.settings)
        self._check_soon(delay=0)
        self.set_focus(self._fields["kind"], scroll_visible=False)

    def _fill(self, settings: RunSettings) -> None:
        """Show `settings`; a kind or API the menus do not offer is reported, then defaulted."""
        for setting in registry.settings():
            if setting.choices and (problem := field_error(settings, setting.name)):
                self.notify(problem, severity="error", timeout=10)
                settings = settings.with_values(**{setting.name: setting.default})
        for name, widget in self._fields.items():
            widget.value = getattr(settings, name)

    def _current(self) -> RunSettings:
        # Every menu has allow_blank=False: a value is never Select.BLANK.
        values = {name: cast(str | bool, widget.value) for name, widget in self._fields.items()}
        return RunSettings(**values)

    @on(Input.Changed, ".setting")
    @on(Select.Changed, ".setting")
    @on(Checkbox.Changed, ".setting")
    def _changed(self) -> None:
        self._show_rows_for(self._current().kind)
        self._check_soon()

    def _show_rows_for(self, kind: str) -> None:
        """Only the rows this kind of run reads: the others are hidden, and not checked."""
        context = context_of(kind)
        for setting in registry.settings():
            if setting.kinds is not None:
                self._rows[setting.name].display = setting.reads(context)

    @work(exclusive=True, group=CHECK_GROUP)
    async def _check_soon(self, delay: float = CHECK_DELAY_S) -> None:
        """Check the form once typing pauses: a newer keystroke cancels this one's wait."""
        await asyncio.sleep(delay)
        settings = self._current()
        self._show(settings, await asyncio.to_thread(assess, settings))

    def _show(self, settings: RunSettings, verdict: Verdict) -> None:
        """Mark every bad field, show the plan's size or its first problem."""
        self._show_rows_for(settings.kind)
        for name, problem in verdict.problems.items():
            self._fields[name].set_class(problem is not None, "-invalid")
            warning = verdict.warning if name == "host" else None
            error = self._errors[name]
            _update(error, problem or warning or "")
            error.set_class(problem is None and warning is not None, "-warning")
            error.display = bool(problem or warning)
        _update(self._estimate, verdict.line)
        self._estimate.set_class(verdict.line_is_error, "-error")
        self._run.disabled = not verdict.runnable

    @on(Input.Submitted, ".setting")
    def _next_field(self) -> None:
        """Enter moves on, as in most forms; running is a deliberate ctrl+s or the Run button."""
        self.focus_next()

    @on(Button.Pressed, "#run")
    async def action_run(self) -> None:
        # Check now: a key typed just before ctrl+s may not have been checked yet.
        self.workers.cancel_group(self, CHECK_GROUP)
        settings = self._current()
        verdict = await asyncio.to_thread(assess, settings)
        if not self.is_current:  # pressed twice: the first one has dismissed the form
            return
        self._show(settings, verdict)
        if not verdict.runnable:
            self.app.bell()
            return
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


def _update(static: Static, text: str) -> None:
    """Every update lays the whole screen out again; a keystroke usually changes no message."""
    if static.content != text:
        static.update(text)


def _misfit(plan: Plan) -> str | None:
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
