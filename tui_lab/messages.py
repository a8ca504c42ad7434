"""The app's own messages: engine events, batched at the screen's pace."""

from __future__ import annotations

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
