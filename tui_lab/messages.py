"""The app's own messages: engine events, batched at the screen's pace."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from tui_lab.engine.events import Event


class EngineEvents(Message):
    """Everything the engine emitted since the last frame, in order.

    1024 requests in flight would otherwise post a message per request; a batch per tick keeps
    the event loop free for the keyboard.
    """

    def __init__(self, events: tuple[Event, ...]) -> None:
        super().__init__()
        self.events = events


class ResumeSweep(Message):
    """The results screen asks the app to run the missing cells of a sweep's results file."""

    def __init__(self, results_file: Path) -> None:
        super().__init__()
        self.results_file = results_file
