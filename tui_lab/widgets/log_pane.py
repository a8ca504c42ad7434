"""Tails the selected process's log file, a few lines at a time, without blocking the UI."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Log

POLL_S = 0.5
READ_LIMIT = 64 * 1024  # per poll: a chatty server cannot stall the event loop
MAX_LINES = 2000


class LogPane(Log):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=MAX_LINES, auto_scroll=True, **kwargs)  # type: ignore[arg-type]
        self.path: Path | None = None
        self._offset = 0
        self._partial = ""

    def on_mount(self) -> None:
        self.set_interval(POLL_S, self._poll)

    def follow(self, path: Path) -> None:
        """Show the last few KB of `path`, then everything it gains."""
        self.path = path
        self.clear()
        self.border_title = path.name
        self._partial = ""
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        self._offset = max(0, size - 8 * 1024)
        self._poll()

    def _poll(self) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read(READ_LIMIT)
        except OSError:
            return
        if not data:
            return
        self._offset += len(data)
        text = self._partial + data.decode(errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        if lines:
            self.write_lines(lines)
