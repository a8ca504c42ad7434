"""The app's own messages: engine events batched at the screen's pace, and what a screen or
the command palette asks the app to do."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from tui_lab.engine.events import Event
from tui_lab.engine.settings.run_settings import RunSettings


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


class PresetChosen(Message):
    """The command palette's preset: the next run's settings, as if loaded in the form."""

    def __init__(self, name: str, settings: RunSettings) -> None:
        super().__init__()
        self.name = name
        self.settings = settings


class ResultsFileChosen(Message):
    """The command palette's results file: open the results screen on it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


class StartWinner(Message):
    """The results screen asks the app to serve the recommended cell of a results file."""

    def __init__(self, results_file: Path) -> None:
        super().__init__()
        self.results_file = results_file
