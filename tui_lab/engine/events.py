"""What the engine tells its watchers: frozen facts, emitted in order.

The CLI's progress bar and the TUI's adapter consume the same stream; neither reaches into
engine objects to find out what happened, nor works a figure out for itself: what a face shows
is here, or a property of what is here. A detached sweep writes them to a file and its watchers
read them back from there (engine/sweeps/event_log.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tui_lab.engine.load.client import RequestRecord
from tui_lab.engine.load.stats import RunSummary
from tui_lab.engine.telemetry.gpu_probe import GpuSample

ProcessRole = Literal["server", "nginx"]
ProcessStatus = Literal[
    "starting", "loading", "ready", "crashed", "stopped", "not answering", "hung"
]
ProcessOwner = Literal["run", "cluster"]
# What a server's row says beyond its process's state, from its own report.
Activity = Literal["busy", "not answering"]


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
    url: str | None = None  # the base URL its clients use, from the host and port it serves on
    # time.time() when it was started: the wall clock, so a detached run's or the cluster
    # supervisor's figure means the same here and in their files; None when unknown
    started: float | None = None


@dataclass(frozen=True)
class InstanceHung:
    """A server that stopped answering its health checks (processes/liveness.py): the lab
    kills it, so the requests it holds fail now instead of at their timeout."""

    index: int
    port: int
    pid: int | None
    silent_since: float  # time.time() of its last answer to /health
    at: float  # time.time() when it was declared hung
    owner: ProcessOwner = "run"

    @property
    def silent_s(self) -> float:
        return self.at - self.silent_since

    def describe(self) -> str:
        """What a person is told: one line, the same in the CLI and the TUI."""
        return (
            f"llama-server #{self.index} (port {self.port}) hung: no answer to /health "
            f"for {self.silent_s:.0f} s; killed it"
        )


@dataclass(frozen=True)
class InstanceTelemetry:
    """One sample of one process and its children."""

    role: ProcessRole
    index: int
    pid: int
    time: float  # time.monotonic() at the start of the round
    alive: bool
    cpu_percent: float | None  # 100 = one core; None on a process's first sample (no interval)
    rss_bytes: int | None
    threads: int | None
    gpu_memory_bytes: int | None
    gpu_reason: str | None  # why gpu_memory_bytes is None
    slots_busy: int | None
    slots_total: int | None
    requests_processing: int | None
    requests_deferred: int | None
    tokens_predicted_total: int | None  # the server's counter: finished requests only
    tokens_per_s: float | None  # live: also counts tokens of requests still generating
    requests_served: int | None  # finished requests, from the server's log
    answering: bool  # False: the process is gone or its server did not report this round
    owner: ProcessOwner = "run"
    kv_cache_usage: float | None = None  # 0..1 of the KV cache, where the server exports it

    @property
    def activity(self) -> Activity | None:
        """ "not answering" for a running server that did not report this round, "busy" while
        one of its slots generates; None: its process's own state says it all."""
        if self.role == "server" and self.alive and not self.answering:
            return "not answering"
        return "busy" if self.slots_busy else None


@dataclass(frozen=True)
class MachineTelemetry:
    """One sample of the whole box, emitted after the round's instance samples."""

    time: float
    cpu_percent: float  # of all cores: 100 = every core busy
    memory_used_bytes: int  # total - available: what no longer fits a new model
    memory_total_bytes: int
    swap_used_bytes: int
    load_1m: float | None
    gpus: tuple[GpuSample, ...]
    gpu_reason: str | None
    unified_memory: bool  # GPU memory is system memory (Apple Silicon)
    # Every watched server's live rate together, a server that missed this round counted with
    # its last rate for a short while; None in a round where no server had a rate.
    tokens_per_s: float | None = None


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
    | InstanceHung
    | RunStarted
    | PlanRevised
    | CellStarted
    | RequestDone
    | RequestsDone
    | CellFinished
    | Notice
    | RunFinished
    | InstanceTelemetry
    | MachineTelemetry
)
EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The sink for callers that do not watch."""
