"""Start the standing cluster: instances, slots and ports, pre-filled from the last values."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from tui_lab.engine.plan.config import exposure_warning
from tui_lab.engine.settings import registry
from tui_lab.engine.settings.registry import CLUSTER, Setting
from tui_lab.engine.settings.run_settings import RunSettings, field_error

FIELDS = (
    ("instances", "Instances"),
    ("parallel", "Parallel (slots each)"),
    ("base_port", "Base port"),
    ("nginx_port", "nginx port"),
    ("host", "Bind address"),
)


def _swept_by_cluster() -> list[Setting]:
    """The settings the cluster reads that a sweep may hold a list of."""
    return [s for s in registry.settings() if s.lists_in and s.reads(CLUSTER)]


def _one(setting: Setting, text: str) -> str:
    if setting.joined:
        return text.split(setting.joined)[0].strip()
    return text.split(",")[-1].strip()


class ClusterModal(ModalScreen[RunSettings | None]):
    DEFAULT_CSS = """
    ClusterModal { align: center middle; }
    ClusterModal > Vertical { width: 64; height: auto; border: thick $accent; padding: 1 2; }
    ClusterModal Grid { grid-size: 2; grid-columns: 24 1fr; height: auto; grid-rows: 3; }
    ClusterModal Label { padding: 1 0 0 0; }
    ClusterModal #cluster-error { color: $error; height: auto; padding: 0; }
    ClusterModal #cluster-error.-warning { color: $warning; }
    ClusterModal Horizontal { height: auto; align: right middle; }
    """
    BINDINGS = [("escape", "dismiss_none", "Cancel")]

    def __init__(self, settings: RunSettings) -> None:
        super().__init__()
        # One value each: a sweep's lists become the cluster's last value (its first model).
        self.settings = settings.with_values(
            kind="test-round-robin",
            **{s.name: _one(s, getattr(settings, s.name)) for s in _swept_by_cluster()},
        )

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Start the round-robin cluster[/b] (left serving for outside clients)")
            with Grid():
                for name, label in FIELDS:
                    yield Label(label)
                    yield Input(str(getattr(self.settings, name)), id=f"cluster-{name}")
            yield Label("", id="cluster-error")
            with Horizontal():
                yield Button("Start", variant="primary", id="cluster-start")
                yield Button("Cancel", id="cluster-cancel")

    def _current(self) -> RunSettings:
        values = {name: self.query_one(f"#cluster-{name}", Input).value for name, _ in FIELDS}
        return self.settings.with_values(**values)

    @on(Input.Changed)
    def _validate(self) -> None:
        settings = self._current()
        errors = [e for name, _ in FIELDS if (e := field_error(settings, name))]
        warning = exposure_warning(settings.host, settings.api_key)
        message = self.query_one("#cluster-error", Label)
        message.update(errors[0] if errors else warning or "")
        message.set_class(not errors and warning is not None, "-warning")
        self.query_one("#cluster-start", Button).disabled = bool(errors)

    @on(Button.Pressed, "#cluster-start")
    @on(Input.Submitted)
    def _start(self) -> None:
        if not self.query_one("#cluster-start", Button).disabled:
            self.dismiss(self._current())

    @on(Button.Pressed, "#cluster-cancel")
    def action_dismiss_none(self) -> None:
        self.dismiss(None)
