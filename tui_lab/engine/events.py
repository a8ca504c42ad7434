"""What the engine tells its watchers: frozen facts, emitted in order.

The CLI's progress bar and the TUI's adapter consume the same stream; neither reaches into
engine objects to find out what happened. A detached sweep writes them to a file and its
watchers read them back from there (engine/event_log.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tui_lab.engine.load.client import RequestRecord
from tui_lab.engine.load.stats import RunSummary

ProcessRole = Literal["server", "nginx"]
ProcessStatus = Literal["starting", "loading", "ready", "crashed", "stopped", "not answering"]
ProcessOwner = Literal["run", "cluster"]


@dataclass(frozen=True)
class ProcessState:
    role: ProcessRole
    index: int  # instance number; 0 for nginx
    port: int
    pid: int | None
    state: ProcessStatus
    exit_code: int | None = None
    log_path: Path | None = None
    detail: str = ""  # why it crashed or failed to become ready, with its last log lines
    owner: ProcessOwner = "run"  # a run's own servers, or the standing cluster's


@dataclass(frozen=True)
class RunStarted:
    run: str
    cells: int
    requests: int  # measured requests over all cells, for progress and ETA


@dataclass(frozen=True)
class PlanRevised:
    """The run's totals, revised: an adaptive search knows after each layout how much less it
    will measure than it first allowed for, and a progress bar should not end at 40 %."""

    cells: int
    requests: int


@dataclass(frozen=True)
class CellStarted:
    index: int  # 1-based
    total: int
    params: Mapping[str, object]


@dataclass(frozen=True)
class RequestDone:
    cell: int
    record: RequestRecord


@dataclass(frozen=True)
class RequestsDone:
    """Several `RequestDone` as counts: what a detached sweep's event file carries instead of
    a line per request."""

    cell: int
    ok: int
    failed: int


@dataclass(frozen=True)
class CellFinished:
    index: int
    total: int
    params: Mapping[str, object]
    summary: RunSummary | None
    error: str | None = None
    note: str = ""  # the adaptive sweep's verdict on the cell: why it goes on or stops


@dataclass(frozen=True)
class Notice:
    level: Literal["info", "warning", "error"]
    text: str


@dataclass(frozen=True)
class RunFinished:
    run: str
    cells_ok: int
    cells_failed: int
    results_csv: Path | None
    cancelled: bool = False


Event = (
    ProcessState
    | RunStarted
    | PlanRevised
    | CellStarted
    | RequestDone
    | RequestsDone
    | CellFinished
    | Notice
    | RunFinished
)
EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The sink for callers that do not watch."""
