"""One row per llama-server and one for nginx: state, slots, requests, CPU, memory, GPU memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from tui_lab.engine.events import ProcessState
from tui_lab.engine.telemetry import InstanceTelemetry
from tui_lab.engine.units import human_bytes

COLUMNS = (
    ("proc", "Process"),
    ("port", "Port"),
    ("pid", "PID"),
    ("state", "State"),
    ("slots", "Slots"),
    ("reqs", "Reqs"),
    ("tps", "tok/s"),
    ("cpu", "CPU%"),
    ("rss", "RSS"),
    ("gpu", "GPU mem"),
    ("up", "Up"),
)
STATE_STYLE = {
    "starting": "yellow",
    "loading": "yellow",
    "ready": "green",
    "busy": "bold green",
    "crashed": "bold red",
    "stopped": "dim",
    "not answering": "red",
}
FIGURES = ("slots", "reqs", "tps", "cpu", "rss", "gpu")


def uptime(since: float | None) -> str:
    if since is None:
        return "-"
    seconds = int(time.monotonic() - since)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}" if hours else f"{minutes}:{secs:02d}"


def row_key(owner: str, role: str, index: int) -> str:
    return f"{owner}-{role}-{index}"


@dataclass
class RowInfo:
    """What the table remembers of a row to act on it: its process, log and start time."""

    state: ProcessState
    started: float | None = None
    gpu_reason: str | None = None
    sampled: bool = False  # telemetry updated its uptime since the clock's last tick

    @property
    def key(self) -> str:
        return row_key(self.state.owner, self.state.role, self.state.index)


class InstanceTable(DataTable[str | Text]):
    """Cells are updated in place by row key; rows are never cleared and re-added per tick."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)  # type: ignore[arg-type]
        self.rows_info: dict[str, RowInfo] = {}

    def _set(self, key: str, column: str, value: str | Text) -> None:
        """Any cell update makes DataTable render every cell again (15 ms for 16 instances on
        the test box, a stall of the event loop the load shares): an unchanged value is left
        alone. Figures grow ("-" becomes "335.0M"): let the column widen rather than truncate,
        but only when the value is wider, as measuring a column to shrink it reads every row."""
        if self.get_cell(key, column) == value:
            return
        width = value.cell_len if isinstance(value, Text) else cell_len(value)
        wider = width > self.columns[ColumnKey(column)].content_width
        self.update_cell(key, column, value, update_width=wider)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self.set_interval(1.0, self._tick_uptime)

    def apply_state(self, event: ProcessState) -> None:
        key = row_key(event.owner, event.role, event.index)
        info = self.rows_info.get(key)
        if info is None:
            info = RowInfo(event)
            self.rows_info[key] = info
            name = "nginx" if event.role == "nginx" else f"server {event.index}"
            if event.owner == "cluster":
                name = f"cluster {name}"
            self.add_row(name, *["-"] * (len(COLUMNS) - 1), key=key)
        if event.state == "starting" or (info.started is None and event.state == "ready"):
            info.started = time.monotonic()
        info.state = event
        label = event.state
        if event.state == "crashed" and event.exit_code is not None:
            label = f"crashed ({event.exit_code})"
        self._set(key, "port", str(event.port))
        self._set(key, "pid", str(event.pid or "-"))
        self._set(key, "state", Text(label, style=STATE_STYLE.get(event.state, "")))
        self._set(key, "up", uptime(info.started))
        if event.state in ("stopped", "crashed"):
            info.started = None
            for column in (*FIGURES, "up"):
                self._set(key, column, "-")

    def apply_telemetry(self, sample: InstanceTelemetry) -> None:
        """A sample belongs to the row whose process has its PID; stale samples are dropped."""
        wanted = (sample.role, sample.index, sample.pid)
        info = next(
            (
                i
                for i in self.rows_info.values()
                if (i.state.role, i.state.index, i.state.pid) == wanted
            ),
            None,
        )
        if info is None or info.state.state in ("stopped", "crashed"):
            return
        key = info.key
        if sample.role == "server" and sample.alive and not sample.answering:
            status = "not answering"
        else:
            status = "busy" if sample.slots_busy else info.state.state
        self._set(key, "state", Text(status, style=STATE_STYLE.get(status, "")))
        slots = "-"
        if sample.slots_total is not None:
            slots = f"{sample.slots_busy or 0}/{sample.slots_total}"
        served, tps, cpu = sample.requests_served, sample.tokens_per_s, sample.cpu_percent
        self._set(key, "slots", slots)
        self._set(key, "reqs", "-" if served is None else str(served))
        self._set(key, "tps", "-" if tps is None else f"{tps:.1f}")
        self._set(key, "cpu", "-" if cpu is None else f"{cpu:.0f}")
        self._set(key, "rss", human_bytes(sample.rss_bytes))
        self._set(key, "gpu", human_bytes(sample.gpu_memory_bytes))
        self._set(key, "up", uptime(info.started))
        info.gpu_reason = sample.gpu_reason
        info.sampled = True

    def _tick_uptime(self) -> None:
        """Uptime of rows telemetry does not reach (yet): the others change with their sample,
        so the table is rendered once a second, not twice."""
        for key, info in self.rows_info.items():
            if not info.sampled:
                self._set(key, "up", uptime(info.started))
            info.sampled = False

    def selected(self) -> RowInfo | None:
        if not self.rows_info or not 0 <= self.cursor_row < self.row_count:
            return None
        key = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value
        return self.rows_info.get(str(key))

    def forget(self, owner: str) -> None:
        """Drop a finished run's (or a stopped cluster's) rows."""
        for key in [k for k, info in self.rows_info.items() if info.state.owner == owner]:
            self.remove_row(key)
            del self.rows_info[key]

    def gpu_reasons(self) -> set[str]:
        return {i.gpu_reason for i in self.rows_info.values() if i.gpu_reason}

    def log_of_selected(self) -> Path | None:
        info = self.selected()
        return info.state.log_path if info else None
