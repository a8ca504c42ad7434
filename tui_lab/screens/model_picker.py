"""Pick a model file without typing its path: the usual folders' GGUF files, or browse.

Over SSH there is no file dialog, and a model path is long and easy to mistype.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label, OptionList
from textual.widgets.option_list import Option

from tui_lab.engine.machine.discovery import DEFAULT_SEARCH_DEPTH, find_model_candidates

MAX_SEARCH_DEPTH = 9  # deeper, and a big ~/Downloads turns the search into a disk scan


class GgufTree(DirectoryTree):
    """Folders and model files only: a home folder's other files would bury the models."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if p.suffix.lower() == ".gguf" or p.is_dir()]


class ModelPicker(ModalScreen[Path | None]):
    DEFAULT_CSS = """
    ModelPicker { align: center middle; }
    ModelPicker > Vertical { width: 90%; height: 90%; border: thick $accent; padding: 0 1; }
    ModelPicker #found { height: auto; max-height: 8; margin-bottom: 1; }
    ModelPicker #search { height: 1; }
    ModelPicker #depth { width: 5; height: 1; border: none; padding: 0; }
    ModelPicker GgufTree { height: 1fr; }
    """
    BINDINGS = [("escape", "dismiss_none", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Choose a model[/b]: found in the usual folders, or browse from ~")
            with Horizontal(id="search"):
                yield Label("folders searched this deep below each usual folder (0-9): ")
                yield Input(str(DEFAULT_SEARCH_DEPTH), id="depth", max_length=1, type="integer")
            yield OptionList(Option("searching…", disabled=True), id="found")
            yield GgufTree(Path.home())

    def on_mount(self) -> None:
        self.query_one("#found").focus()
        self._search(DEFAULT_SEARCH_DEPTH)

    @on(Input.Changed, "#depth")
    def _depth_changed(self, event: Input.Changed) -> None:
        if event.value.isdigit() and int(event.value) <= MAX_SEARCH_DEPTH:
            self._search(int(event.value))

    @work(group="search", exclusive=True)
    async def _search(self, depth: int) -> None:
        """The walk touches the disk, maybe a slow one: keep it off the event loop."""
        paths = await asyncio.to_thread(find_model_candidates, depth)
        found = self.query_one("#found", OptionList)
        found.clear_options()
        if paths:
            found.add_options(Option(_short(p), id=str(p)) for p in paths)
            found.highlighted = 0
        else:
            found.add_option(Option("no .gguf file in the usual folders", disabled=True))

    @on(OptionList.OptionSelected, "#found")
    def _found(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            self.dismiss(Path(event.option.id))

    @on(DirectoryTree.FileSelected)
    def _browsed(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(event.path)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


def _short(path: Path) -> str:
    """`~/models/x.gguf` reads better than the full home path on an 80-column screen."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except ValueError:
        return str(path)
