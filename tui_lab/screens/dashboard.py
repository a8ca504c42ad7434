"""The main screen: instances, progress, live throughput and the selected process's log."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Header, Label

from tui_lab.engine.events import (
    CellStarted,
    InstanceHung,
    InstanceTelemetry,
    MachineTelemetry,
    ProcessState,
    RunStarted,
)
from tui_lab.engine.telemetry.gpu_probe import GpuSample
from tui_lab.messages import EngineEvents
from tui_lab.widgets.instance_table import InstanceTable, human_bytes
from tui_lab.widgets.log_pane import LogPane
from tui_lab.widgets.run_progress import RunProgress
from tui_lab.widgets.throughput_plot import ThroughputPlot

NARROW_BELOW = 100  # columns


class DashboardScreen(Screen[None]):
    """Renders what the engine emits; acts only through the app's actions.

    `k` and `l` (the app's bindings, `screen.restart_instance` and `screen.show_log`) act on the
    table's selected row: the table posts the request, the app restarts, this screen shows logs.
    """

    # Below 100 columns the log beside the plot would cut a server's lines at ~29 columns:
    # there the two take turns at the full width (`log_shown`), `l` switching between them.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (NARROW_BELOW, "-wide")]

    status: reactive[str] = reactive("", init=False)
    log_shown: reactive[bool] = reactive(False, init=False)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Label(self.status, id="status-line")
        yield InstanceTable(id="instances")
        yield Label("", id="machine-line")
        yield RunProgress(id="progress")
        with Horizontal(id="lower"):
            yield ThroughputPlot(id="plot")
            yield LogPane(id="log")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one(InstanceTable).focus()

    def watch_status(self, text: str) -> None:
        if self.is_mounted:
            self.query_one("#status-line", Label).update(text)

    def watch_log_shown(self, shown: bool) -> None:
        self.query_one("#lower").set_class(shown, "-log")

    @on(EngineEvents)
    def apply_events(self, message: EngineEvents) -> None:
        table = self.query_one(InstanceTable)
        plot = self.query_one(ThroughputPlot)
        progress = self.query_one(RunProgress)
        for event in message.events:
            if isinstance(event, ProcessState):
                table.apply_state(event)
            elif isinstance(event, InstanceHung):
                table.apply_hung(event)
            elif isinstance(event, InstanceTelemetry):
                table.apply_telemetry(event)
                plot.apply_telemetry(event)
            elif isinstance(event, MachineTelemetry):
                self._show_machine(event, table.gpu_reasons())
                plot.apply_machine(event)
            else:
                if isinstance(event, RunStarted):
                    table.forget("run")
                    plot.reset()
                elif isinstance(event, CellStarted):
                    plot.apply_cell(event)
                progress.apply(event)

    def _show_machine(self, m: MachineTelemetry, reasons: set[str]) -> None:
        label = self.query_one("#machine-line", Label)
        label.update(machine_line(m, reasons, label.content_size.width or self.size.width))

    def action_restart_instance(self) -> None:
        self.query_one(InstanceTable).request_restart()

    def action_show_log(self) -> None:
        self.query_one(InstanceTable).request_log()

    @on(InstanceTable.LogRequested)
    def _follow_log(self, message: InstanceTable.LogRequested) -> None:
        """Follow the row's log; where the log takes turns with the plot, `l` on the row whose
        log is shown brings the plot back."""
        pane = self.query_one(LogPane)
        if self.has_class("-narrow") and self.log_shown and pane.path == message.log_path:
            self.log_shown = False
            return
        pane.follow(message.log_path)
        self.log_shown = True


def machine_line(m: MachineTelemetry, reasons: set[str], width: int) -> str:
    """CPU, RAM and every GPU's utilisation and memory in `width` columns: one line while it
    fits (totals dropped first), else the GPUs on a second line, as detailed as fits there.
    Eight GPUs at 80 columns end with each GPU's utilisation and their memory together."""
    head = (
        f"CPU {m.cpu_percent:.0f}%  RAM {human_bytes(m.memory_used_bytes)}/"
        f"{human_bytes(m.memory_total_bytes)}"
    )
    if not m.gpus:
        return f"{head}  GPU: {m.gpu_reason or next(iter(reasons), 'none')}"
    forms = _gpu_forms(m.gpus)
    texts = [f"{head}  {gpus}" for gpus in forms[:2]] + [f"{head}\n{gpus}" for gpus in forms]
    return next(
        (text for text in texts if all(len(line) <= width for line in text.splitlines())),
        texts[-1],
    )


def _gpu_forms(gpus: tuple[GpuSample, ...]) -> tuple[str, ...]:
    """The GPUs, most detailed first: with totals, without, numbered only, utilisations only."""
    used = sum(g.memory_used_bytes for g in gpus)
    total = sum(g.memory_total_bytes for g in gpus)
    return (
        "  ".join(
            f"GPU{g.index} {_busy(g)} {_short(g.memory_used_bytes)}/{_short(g.memory_total_bytes)}"
            for g in gpus
        ),
        "  ".join(f"GPU{g.index} {_busy(g)} {_short(g.memory_used_bytes)}" for g in gpus),
        "GPU " + " ".join(f"{g.index}:{_busy(g)} {_short(g.memory_used_bytes)}" for g in gpus),
        f"GPU% {' '.join(_busy(g).rstrip('%') for g in gpus)}  "
        f"memory {_short(used)}/{_short(total)}",
    )


def _busy(gpu: GpuSample) -> str:
    """Utilisation, or "-" where NVML has none for this board: not a made-up 0 %."""
    return "-" if gpu.utilization_percent is None else f"{gpu.utilization_percent:.0f}%"


def _short(size: int) -> str:
    """human_bytes without a ".0": 80G, 3.1G."""
    text = human_bytes(size)
    return f"{float(text[:-1]):g}{text[-1]}"
