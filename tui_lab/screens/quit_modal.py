"""Quitting while a standing cluster serves: the user decides whether it keeps serving."""

from __future__ import annotations

from typing import Literal

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

QuitChoice = Literal["leave", "stop", "cancel"]


class QuitModal(ModalScreen[QuitChoice]):
    DEFAULT_CSS = """
    QuitModal { align: center middle; }
    QuitModal > Vertical { width: 60; height: auto; border: thick $warning; padding: 1 2; }
    QuitModal Horizontal { height: auto; align: center middle; }
    QuitModal Button { margin: 1 1 0 1; }
    """
    BINDINGS = [("escape", "choose('cancel')", "Cancel")]

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.endpoint = endpoint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"The round-robin cluster is serving at {self.endpoint}.")
            yield Label("Leave it serving after you quit?")
            with Horizontal():
                yield Button("Leave serving", variant="primary", id="leave")
                yield Button("Stop it", variant="warning", id="stop")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: QuitChoice) -> None:
        self.dismiss(choice)
