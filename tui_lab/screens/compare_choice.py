"""Which sweep to compare the one on screen with: the other results files of the folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList


class CompareChoice(ModalScreen[Path | None]):
    """Dismisses with the chosen file (B of the comparison), or None on escape."""

    DEFAULT_CSS = """
    CompareChoice { align: center middle; }
    CompareChoice > Vertical { width: 80; max-width: 100%; height: auto; max-height: 100%;
                               border: thick $primary; padding: 1 2; }
    CompareChoice OptionList { height: auto; max-height: 12; }
    """
    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(self, current: Path, files: Sequence[Path]) -> None:
        super().__init__()
        self.current = current
        self.files = [f for f in files if f != current]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Compare {self.current.name} (A) with (B):")
            yield OptionList(*(f.name for f in self.files), id="compare-files")

    @on(OptionList.OptionSelected, "#compare-files")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.files[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)
