"""Command palette providers: a saved preset or a results file by name, from anywhere.

Over SSH a preset is quicker to type than to find in the form, and a results file from last
week is quicker to name than to scroll to. Choosing one posts a message; the app acts on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message

from tui_lab.engine.errors import LabError
from tui_lab.engine.settings.presets import load_presets
from tui_lab.messages import PresetChosen, ResultsFileChosen

if TYPE_CHECKING:
    from tui_lab.app import LabApp

# What the palette shows, its help line, and the message it posts (made when chosen: a message
# is posted once).
Command = tuple[str, str, Callable[[], Message]]


class _Commands(Provider):
    """Commands gathered once when the palette opens (off the loop: they read files), then
    matched as the person types."""

    _commands: list[Command]

    def gather(self) -> list[Command]:
        raise NotImplementedError

    async def startup(self) -> None:
        self._commands = await asyncio.to_thread(self.gather)

    def _post(self, message: Callable[[], Message]) -> Callable[[], object]:
        return lambda: self.app.post_message(message())

    async def discover(self) -> Hits:
        for text, help_text, message in self._commands:
            yield DiscoveryHit(text, self._post(message), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, message in self._commands:
            if (score := matcher.match(text)) > 0:
                yield Hit(score, matcher.highlight(text), self._post(message), help=help_text)


class PresetCommands(_Commands):
    def gather(self) -> list[Command]:
        try:
            presets = load_presets()
        except LabError:
            return []  # the form says what is wrong with the file; the palette just has none
        return [
            (
                f"preset: {name}",
                f"{s.kind}: the next run's settings",
                partial(PresetChosen, name, s),
            )
            for name, s in presets.items()
        ]


class ResultsCommands(_Commands):
    def gather(self) -> list[Command]:
        app = cast("LabApp", self.app)
        folder = Path(app.settings.results or "results")
        return [
            (f"results: {path.name}", str(path), partial(ResultsFileChosen, path))
            for path in sorted(
                folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True
            )
        ]
