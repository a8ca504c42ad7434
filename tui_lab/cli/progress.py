"""The CLI's view of the engine's event stream: a progress line with ETA, a line per cell."""

from __future__ import annotations

import time
from typing import TextIO

from tui_lab.engine.events import (
    CellFinished,
    CellStarted,
    Event,
    InstanceHung,
    Notice,
    ProcessState,
)
from tui_lab.engine.sweeps.progress import ProgressTracker

REDRAW_S = 0.2
BAR_WIDTH = 24


class ProgressPrinter:
    """Redraws one status line on a terminal (at most 5 times a second); plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.tracker = ProgressTracker()
        self._last_draw = 0.0

    def handle(self, event: Event) -> None:
        self.tracker.apply(event)
        if isinstance(event, CellStarted):
            params = " ".join(
                f"{k}={event.params[k]}" for k in ("instances", "parallel", "concurrency")
            )
            self._line(f"cell {event.index}/{event.total}: {params}")
        elif isinstance(event, CellFinished):
            if event.summary is not None:
                s = event.summary
                text = (
                    f"cell {event.index}/{event.total} done: {s.output_tok_per_s:.1f} tok/s, "
                    f"{s.requests_ok} ok, {s.requests_failed} failed"
                    + (f"; {event.error}" if event.error else "")
                )
            else:
                text = f"cell {event.index}/{event.total} failed: {event.error}"
            self._line(text + (f" -- {event.note}" if event.note else ""))
        elif isinstance(event, InstanceHung):
            self._line(event.describe())
        elif isinstance(event, ProcessState) and event.state == "crashed":
            self._line(f"{event.role} #{event.index} crashed: {event.detail}")
        elif isinstance(event, Notice):
            self._line(event.text if event.level == "info" else f"{event.level}: {event.text}")
        else:
            self._draw()

    def status_line(self) -> str:
        filled = int(self.tracker.fraction * BAR_WIDTH)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.tracker.summary()}"

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
