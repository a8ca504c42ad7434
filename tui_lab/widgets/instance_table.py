"""One row per llama-server and one for nginx: state, slots, requests, CPU, memory, GPU memory,
and, where the terminal is wide enough for every column, KV-cache use and requests waiting for
a slot (dropped, not scrolled to, in a narrower one, so 80 columns keep the rest readable).

A line-based widget (Textual's Line API), not a DataTable: DataTable drops its whole render
cache on any `update_cell` and renders every cell again (~80 us a cell), so with 64 instances a
telemetry round stalled the event loop the load shares for ~56 ms. Here each row keeps its
rendered line; a changed value re-renders that row only, and only once it is on screen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui_lab.engine.events import InstanceHung, InstanceTelemetry, ProcessState
from tui_lab.engine.units import human_bytes

__all__ = ["COLUMNS", "InstanceTable", "RowInfo", "human_bytes", "row_key", "uptime"]

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
    ("kv", "KV%"),
    ("deferred", "Deferred"),
)
COLUMN_INDEX = {key: i for i, (key, _) in enumerate(COLUMNS)}
STATE_COLUMN = COLUMN_INDEX["state"]
WIDE_ONLY = frozenset({COLUMN_INDEX["kv"], COLUMN_INDEX["deferred"]})
# A state's colour is its component class, styled from the theme in DEFAULT_CSS.
STATES = ("starting", "loading", "ready", "busy", "crashed", "hung", "stopped", "not-answering")
GONE = ("stopped", "crashed", "hung")  # states of a process that no longer runs
FIGURES = ("slots", "reqs", "tps", "cpu", "rss", "gpu", "kv", "deferred")
PADDING = 1  # blank cells each side of a value, as DataTable's cell_padding


def uptime(process: ProcessState) -> str:
    """Time since the engine started the process; "-" once it no longer runs."""
    since = process.started
    if since is None or process.state in GONE:
        return "-"
    seconds = int(time.time() - since)
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}" if hours else f"{minutes}:{secs:02d}"


def row_key(owner: str, role: str, index: int) -> str:
    return f"{owner}-{role}-{index}"


@dataclass
class RowInfo:
    """What the table remembers of a row to act on it: its process and its log."""

    state: ProcessState
    gpu_reason: str | None = None
    sampled: bool = False  # telemetry updated its uptime since the clock's last tick

    @property
    def key(self) -> str:
        return row_key(self.state.owner, self.state.role, self.state.index)


class InstanceTable(ScrollView, can_focus=True):
    """Values are kept per row; a row's line is rendered once and reused until one of its
    values, its zebra stripe or the cursor on it changes. Columns only widen (a figure growing
    from "-" to "335.0M"), as shrinking one would mean measuring every row each tick.

    Acting on a row is asked for with a message (`RestartRequested`, `LogRequested`): the table
    knows which row is selected, whoever listens knows what to do with it."""

    class RestartRequested(Message):
        """Restart the selected llama-server."""

        def __init__(self, process: ProcessState) -> None:
            super().__init__()
            self.process = process

    class LogRequested(Message):
        """Show the selected process's log."""

        def __init__(self, process: ProcessState, log_path: Path) -> None:
            super().__init__()
            self.process = process
            self.log_path = log_path

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "cursor_page(-1)", "Page up", show=False),
        Binding("pagedown", "cursor_page(1)", "Page down", show=False),
        Binding("home", "cursor_first", "First", show=False),
        Binding("end", "cursor_last", "Last", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "instance-table--header",
        "instance-table--cursor",
        "instance-table--even-row",
        *(f"instance-table--{state}" for state in STATES),
    }
    DEFAULT_CSS = """
    InstanceTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        &:focus {
            background-tint: $foreground 5%;
            & > .instance-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
        & > .instance-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .instance-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .instance-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .instance-table--starting { color: $warning; }
        & > .instance-table--loading { color: $warning; }
        & > .instance-table--ready { color: $success; }
        & > .instance-table--busy { color: $success; text-style: bold; }
        & > .instance-table--crashed { color: $error; text-style: bold; }
        & > .instance-table--hung { color: $error; text-style: bold; }
        & > .instance-table--stopped { color: $text-muted; }
        & > .instance-table--not-answering { color: $error; }
    }
    """

    cursor_row: reactive[int] = reactive(0, init=False)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rows_info: dict[str, RowInfo] = {}
        self._order: list[str] = []  # row keys, top to bottom
        self._cells: dict[str, list[str]] = {}
        self._status: dict[str, str] = {}  # the state shown, which picks its colour
        self._widths = [cell_len(label) for _, label in COLUMNS]
        self._shown = tuple(range(len(COLUMNS)))  # the columns drawn at this width
        self._lines: dict[str, tuple[Strip, Style]] = {}  # row key -> its line, its row style
        self._header: tuple[Strip, Style] | None = None

    # ---- what the rest of the app uses -------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._order)

    def row_index(self, key: str) -> int:
        return self._order.index(key)

    def cell(self, key: str, column: str) -> str:
        return self._cells[key][COLUMN_INDEX[column]]

    def column_width(self, column: str) -> int:
        """The width of a column's values (padding excluded)."""
        return self._widths[COLUMN_INDEX[column]]

    def on_mount(self) -> None:
        self._resize_virtual()
        self.set_interval(1.0, self._tick_uptime)

    def request_restart(self) -> None:
        info = self.selected()
        if info is None or info.state.role != "server":
            self.notify("select a llama-server row first", severity="warning")
            return
        self.post_message(self.RestartRequested(info.state))

    def request_log(self) -> None:
        info = self.selected()
        if info is None or info.state.log_path is None:
            self.notify("select a process row first", severity="warning")
            return
        self.post_message(self.LogRequested(info.state, info.state.log_path))

    def apply_state(self, event: ProcessState) -> None:
        key = row_key(event.owner, event.role, event.index)
        info = self.rows_info.get(key)
        new = info is None
        if info is None:
            info = RowInfo(event)
            self.rows_info[key] = info
            name = "nginx" if event.role == "nginx" else f"server {event.index}"
            if event.owner == "cluster":
                name = f"cluster {name}"
            self._order.append(key)
            self._cells[key] = ["-"] * len(COLUMNS)
            self._status[key] = ""
            self._set(key, "proc", name)
            self._resize_virtual()
        info.state = event
        label: str = event.state
        if event.state == "crashed" and event.exit_code is not None:
            label = f"crashed ({event.exit_code})"
        changed = self._set(key, "port", str(event.port)) or new
        changed |= self._set(key, "pid", str(event.pid or "-"))
        changed |= self._set_state(key, label, event.state)
        changed |= self._set(key, "up", uptime(event))
        if event.state in GONE:
            for column in FIGURES:
                changed |= self._set(key, column, "-")
        if changed:
            self._row_changed(key)

    def apply_hung(self, event: InstanceHung) -> None:
        """Shown as soon as the engine declares it; its process's exit follows as "hung"."""
        key = row_key(event.owner, "server", event.index)
        if key in self.rows_info and self._set_state(key, "hung", "hung"):
            self._row_changed(key)

    def apply_telemetry(self, sample: InstanceTelemetry) -> None:
        """A sample belongs to the row of its owner, role and index while that row's process
        has its PID; a stale process's sample is dropped."""
        key = row_key(sample.owner, sample.role, sample.index)
        info = self.rows_info.get(key)
        if info is None or info.state.pid != sample.pid or info.state.state in GONE:
            return
        status = sample.activity or info.state.state
        slots = "-"
        if sample.slots_total is not None:
            slots = f"{sample.slots_busy or 0}/{sample.slots_total}"
        served, tps, cpu = sample.requests_served, sample.tokens_per_s, sample.cpu_percent
        kv, deferred = sample.kv_cache_usage, sample.requests_deferred
        changed = self._set_state(key, status, status)
        changed |= self._set(key, "slots", slots)
        changed |= self._set(key, "reqs", "-" if served is None else str(served))
        changed |= self._set(key, "tps", "-" if tps is None else f"{tps:.1f}")
        changed |= self._set(key, "cpu", "-" if cpu is None else f"{cpu:.0f}")
        changed |= self._set(key, "rss", human_bytes(sample.rss_bytes))
        changed |= self._set(key, "gpu", human_bytes(sample.gpu_memory_bytes))
        changed |= self._set(key, "up", uptime(info.state))
        changed |= self._set(key, "kv", "-" if kv is None else f"{kv:.0%}")
        changed |= self._set(key, "deferred", "-" if deferred is None else str(deferred))
        if changed:
            self._row_changed(key)
        info.gpu_reason = sample.gpu_reason
        info.sampled = True

    def selected(self) -> RowInfo | None:
        if not 0 <= self.cursor_row < len(self._order):
            return None
        return self.rows_info.get(self._order[self.cursor_row])

    def forget(self, owner: str) -> None:
        """Drop a finished run's (or a stopped cluster's) rows."""
        gone = {k for k, info in self.rows_info.items() if info.state.owner == owner}
        if not gone:
            return
        for key in gone:
            del self.rows_info[key], self._cells[key], self._status[key]
        self._order = [k for k in self._order if k not in gone]
        self._lines.clear()  # rows moved up: their zebra stripes changed
        self.cursor_row = min(self.cursor_row, max(0, len(self._order) - 1))
        self._resize_virtual()
        self.refresh()

    def gpu_reasons(self) -> set[str]:
        return {i.gpu_reason for i in self.rows_info.values() if i.gpu_reason}

    # ---- keeping values ----------------------------------------------------------------

    def _set(self, key: str, column: str, value: str) -> bool:
        """Store a value; True when it changed. A wider value widens its column, which moves
        every later column: then, and only then, every line is rendered again."""
        cells = self._cells[key]
        i = COLUMN_INDEX[column]
        if cells[i] == value:
            return False
        cells[i] = value
        if (width := cell_len(value)) > self._widths[i]:
            self._widths[i] = width
            self._lines.clear()
            self._header = None
            self._resize_virtual()
            self.refresh()
        return True

    def _set_state(self, key: str, label: str, status: str) -> bool:
        changed = self._status[key] != status
        self._status[key] = status
        return self._set(key, "state", label) or changed

    def _row_changed(self, key: str) -> None:
        self._lines.pop(key, None)
        self._refresh_row(self._order.index(key))

    def _refresh_row(self, index: int) -> None:
        self.refresh_line(index + 1)  # the header is line 0

    def _tick_uptime(self) -> None:
        """Uptime of rows telemetry does not reach (yet): the others change with their sample,
        so a row is rendered once a second, not twice."""
        for key, info in self.rows_info.items():
            if not info.sampled and self._set(key, "up", uptime(info.state)):
                self._row_changed(key)
            info.sampled = False

    # ---- the cursor ----------------------------------------------------------------------

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self._order) - 1))

    def watch_cursor_row(self, old: int, new: int) -> None:
        for index in (old, new):
            if 0 <= index < len(self._order):
                self._lines.pop(self._order[index], None)
                self._refresh_row(index)
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        visible = self.scrollable_content_region.height - 1  # rows under the header
        if visible <= 0:
            return
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def action_cursor_up(self) -> None:
        self.cursor_row -= 1

    def action_cursor_down(self) -> None:
        self.cursor_row += 1

    def action_cursor_page(self, direction: int) -> None:
        self.cursor_row += direction * max(1, self.scrollable_content_region.height - 1)

    def action_cursor_first(self) -> None:
        self.cursor_row = 0

    def action_cursor_last(self) -> None:
        self.cursor_row = len(self._order) - 1

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        index = offset.y - 1 + int(self.scroll_y)
        if index < len(self._order):
            self.cursor_row = index

    # ---- rendering -----------------------------------------------------------------------

    def notify_style_update(self) -> None:
        """A theme change or focus restyles every line."""
        super().notify_style_update()
        self._lines.clear()
        self._header = None

    def on_resize(self) -> None:
        self._resize_virtual()

    def _resize_virtual(self) -> None:
        every = range(len(COLUMNS))
        shown = tuple(every)
        if 0 < self.size.width < self._width_of(shown):
            shown = tuple(i for i in every if i not in WIDE_ONLY)
        if shown != self._shown:
            self._shown = shown
            self._lines.clear()
            self._header = None
            self.refresh()
        self.virtual_size = Size(self._width_of(shown), 1 + len(self._order))

    def _width_of(self, columns: tuple[int, ...]) -> int:
        return sum(self._widths[i] for i in columns) + 2 * PADDING * len(columns)

    def render_line(self, y: int) -> Strip:
        """Line 0 is the header, kept in place when the rows scroll; both scroll sideways."""
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if y == 0:
            if self._header is None:
                style = self.rich_style + self.get_component_rich_style("instance-table--header")
                self._header = (self._line([label for _, label in COLUMNS], style, None), style)
            strip, style = self._header
        else:
            index = y - 1 + scroll_y
            if index >= len(self._order):
                return Strip.blank(width, self.rich_style)
            strip, style = self._row_line(index)
        return strip.crop_extend(scroll_x, scroll_x + width, style)

    def _row_line(self, index: int) -> tuple[Strip, Style]:
        key = self._order[index]
        cached = self._lines.get(key)
        if cached is None:
            style = self.rich_style
            if index % 2 == 0:  # zebra stripes, counted as DataTable did
                style += self.get_component_rich_style("instance-table--even-row")
            cursor = None
            if index == self.cursor_row:
                cursor = self.get_component_rich_style("instance-table--cursor")
                style += cursor
            cached = (self._render_row(key, style, cursor), style)
            self._lines[key] = cached
        return cached

    def _render_row(self, key: str, style: Style, cursor: Style | None) -> Strip:
        status = self._status[key]
        state_style = style
        if status:
            name = f"instance-table--{status.replace(' ', '-')}"
            # partial: the state sets a colour only, the row keeps its stripe
            state_style = style + self.get_component_rich_style(name, partial=True, default=Style())
            if cursor is not None:  # the cursor's colours win, as in DataTable
                state_style += cursor
        return self._line(self._cells[key], style, state_style)

    def _line(self, values: list[str], style: Style, state_style: Style | None) -> Strip:
        pad = " " * PADDING
        segments = []
        for i in self._shown:
            value, width = values[i], self._widths[i]
            text = f"{pad}{value}{' ' * (width - cell_len(value))}{pad}"
            cell_style = state_style if i == STATE_COLUMN and state_style is not None else style
            segments.append(Segment(text, cell_style))
        return Strip(segments, self._width_of(self._shown))
