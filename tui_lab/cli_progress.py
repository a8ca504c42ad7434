"""The CLI's view of the engine's event stream: a progress line with ETA, a line per cell."""

from __future__ import annotations

import time
from typing import TextIO

from tui_lab.engine.events import (
    CellFinished,
    CellStarted,
    Event,
    Notice,
    ProcessState,
    RequestDone,
    RunStarted,
)

REDRAW_S = 0.2
BAR_WIDTH = 24


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


class ProgressPrinter:
    """Redraws one status line on a terminal (at most 5 times a second); plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.start = time.monotonic()
        self.cells = 0
        self.cell = 0
        self.requests_total = 0
        self.requests_done = 0
        self._last_draw = 0.0

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.cells, self.requests_total = event.cells, event.requests
            self.start = time.monotonic()
        elif isinstance(event, CellStarted):
            self.cell = event.index
            params = " ".join(
                f"{k}={event.params[k]}" for k in ("instances", "parallel", "concurrency")
            )
            self._line(f"cell {event.index}/{event.total}: {params}")
        elif isinstance(event, RequestDone):
            self.requests_done += 1
            self._draw()
        elif isinstance(event, CellFinished):
            if event.summary is not None:
                s = event.summary
                text = (
                    f"cell {event.index}/{event.total} done: {s.output_tok_per_s:.1f} tok/s, "
                    f"{s.requests_ok} ok, {s.requests_failed} failed"
                )
            else:
                text = f"cell {event.index}/{event.total} failed: {event.error}"
            self._line(text)
        elif isinstance(event, ProcessState) and event.state == "crashed":
            self._line(f"{event.role} #{event.index} crashed: {event.detail}")
        elif isinstance(event, Notice) and event.level != "info":
            self._line(f"{event.level}: {event.text}")

    def status_line(self) -> str:
        elapsed = time.monotonic() - self.start
        frac = self.requests_done / self.requests_total if self.requests_total else 0.0
        filled = int(frac * BAR_WIDTH)
        eta = eta_seconds(elapsed, self.requests_done, self.requests_total)
        return (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] cell {self.cell}/{self.cells} "
            f"requests {self.requests_done}/{self.requests_total} "
            f"elapsed {format_duration(elapsed)} "
            f"ETA {format_duration(eta) if eta is not None else '--'}"
        )

    def _draw(self) -> None:
        now = time.monotonic()
        if not self.live or now - self._last_draw < REDRAW_S:
            return
        self._last_draw = now
        self.out.write("\r\x1b[2K" + self.status_line())
        self.out.flush()

    def _line(self, text: str) -> None:
        prefix = "\r\x1b[2K" if self.live else ""
        self.out.write(f"{prefix}{text}\n")
        self.out.flush()
        self._last_draw = 0.0

    def close(self) -> None:
        if self.live:
            self.out.write("\r\x1b[2K" + self.status_line() + "\n")
            self.out.flush()
