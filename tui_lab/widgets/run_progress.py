"""Cells and requests done, elapsed and ETA, from the engine's progress tracker."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar

from tui_lab.engine.events import Event
from tui_lab.engine.sweeps.progress import ProgressTracker


class RunProgress(Vertical):
    DEFAULT_CSS = """
    RunProgress { height: 2; }
    RunProgress ProgressBar { width: 1fr; }
    RunProgress #progress-text { width: 1fr; color: $text-muted; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.tracker = ProgressTracker()

    def compose(self) -> ComposeResult:
        yield ProgressBar(total=1, show_eta=False, id="progress-bar")
        yield Label("no run yet: c configures, s starts, r starts a cluster", id="progress-text")

    def on_mount(self) -> None:
        self.set_interval(1.0, self._show)

    def apply(self, event: Event) -> None:
        self.tracker.apply(event)

    def _show(self) -> None:
        t = self.tracker
        if not t.requests_total:
            return
        self.query_one(ProgressBar).update(total=t.requests_total, progress=t.requests_done)
        self.query_one("#progress-text", Label).update(f"{t.run}: {t.summary()}")
