"""The main screen: instances, progress, live throughput and the selected process's log."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from tui_lab.engine.events import CellStarted, ProcessState, RunStarted
from tui_lab.engine.telemetry import InstanceTelemetry, MachineTelemetry
from tui_lab.messages import EngineEvents
from tui_lab.widgets.instance_table import InstanceTable, human_bytes
from tui_lab.widgets.log_pane import LogPane
from tui_lab.widgets.run_progress import RunProgress
from tui_lab.widgets.throughput_plot import ThroughputPlot


class DashboardScreen(Screen[None]):
    """Renders what the engine emits; acts only through the app's actions."""

    status: reactive[str] = reactive("", init=False)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(self.status, id="status-line")
        yield InstanceTable(id="instances")
        yield Label("", id="machine-line")
        yield RunProgress(id="progress")
        with Horizontal(id="lower"):
            yield ThroughputPlot(id="plot")
            yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(InstanceTable).focus()

    def watch_status(self, text: str) -> None:
        if self.is_mounted:
            self.query_one("#status-line", Label).update(text)

    @on(EngineEvents)
    def apply_events(self, message: EngineEvents) -> None:
        table = self.query_one(InstanceTable)
        plot = self.query_one(ThroughputPlot)
        progress = self.query_one(RunProgress)
        for event in message.events:
            if isinstance(event, ProcessState):
                table.apply_state(event)
            elif isinstance(event, InstanceTelemetry):
                table.apply_telemetry(event)
                plot.apply_telemetry(event)
            elif isinstance(event, MachineTelemetry):
                self._show_machine(event, table.gpu_reasons())
            else:
                if isinstance(event, RunStarted):
                    table.forget("run")
                    plot.reset()
                elif isinstance(event, CellStarted):
                    plot.apply_cell(event)
                progress.apply(event)

    def _show_machine(self, m: MachineTelemetry, reasons: set[str]) -> None:
        if m.gpus:
            gpu = " | ".join(
                f"GPU{g.index} {human_bytes(g.memory_used_bytes)}/"
                f"{human_bytes(g.memory_total_bytes)}"
                for g in m.gpus
            )
        else:
            gpu = f"GPU: {m.gpu_reason or next(iter(reasons), 'none')}"
        self.query_one("#machine-line", Label).update(
            f"CPU {m.cpu_percent:.0f}%  RAM {human_bytes(m.memory_used_bytes)}/"
            f"{human_bytes(m.memory_total_bytes)}  {gpu}"
        )

    def follow_selected_log(self) -> bool:
        path = self.query_one(InstanceTable).log_of_selected()
        if path is None:
            return False
        self.query_one(LogPane).follow(path)
        return True
