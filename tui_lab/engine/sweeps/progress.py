"""Progress of a run, derived from its events: what the CLI's bar and the TUI's panel show.

Both surfaces read the same tracker, so "requests 40/96, ETA 1:10" means the same in each.
"""

from __future__ import annotations

import time

from tui_lab.engine.events import (
    CellFinished,
    CellStarted,
    Event,
    PlanRevised,
    RequestDone,
    RequestsDone,
    RunStarted,
)


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta_seconds(elapsed: float, done: int, total: int) -> float | None:
    """Remaining time at the pace so far; None until there is a pace to go by."""
    if done <= 0 or total <= 0:
        return None
    return elapsed * (total - done) / done


class ProgressTracker:
    """Cells and requests done out of the run's totals, elapsed time and ETA."""

    def __init__(self) -> None:
        self.run = ""
        self.cells_total = 0
        self.cells_done = 0
        self.cell = 0
        self.requests_total = 0
        self.requests_done = 0
        self.requests_failed = 0
        self.started: float | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.__init__()  # type: ignore[misc]
            self.run = event.run
            self.cells_total, self.requests_total = event.cells, event.requests
            self.started = time.monotonic()
        elif isinstance(event, PlanRevised):
            self.cells_total, self.requests_total = event.cells, event.requests
        elif isinstance(event, CellStarted):
            self.cell = event.index
        elif isinstance(event, RequestDone):
            self.requests_done += 1
            self.requests_failed += 0 if event.record.ok else 1
        elif isinstance(event, RequestsDone):
            self.requests_done += event.ok + event.failed
            self.requests_failed += event.failed
        elif isinstance(event, CellFinished):
            self.cells_done += 1

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    @property
    def fraction(self) -> float:
        return self.requests_done / self.requests_total if self.requests_total else 0.0

    def eta(self) -> float | None:
        return eta_seconds(self.elapsed, self.requests_done, self.requests_total)

    def summary(self) -> str:
        eta = self.eta()
        return (
            f"cell {self.cell}/{self.cells_total}  "
            f"requests {self.requests_done}/{self.requests_total}"
            + (f" ({self.requests_failed} failed)" if self.requests_failed else "")
            + f"  elapsed {format_duration(self.elapsed)}"
            + f"  ETA {format_duration(eta) if eta is not None else '--'}"
        )
