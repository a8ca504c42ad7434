"""A question with a few answers, for the moments the app must not decide alone: quitting
while a cluster serves, or finding processes an earlier lab left running."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label

Variant = Literal["default", "primary", "success", "warning", "error"]


class ChoiceModal(ModalScreen[str]):
    """Dismisses with the id of the pressed button; escape means `cancel_id`."""

    DEFAULT_CSS = """
    ChoiceModal { align: center middle; }
    ChoiceModal > Vertical { width: 70; max-width: 100%; height: auto; max-height: 100%;
                             border: thick $warning; padding: 1 2; }
    ChoiceModal Horizontal { height: auto; align: center middle; }
    ChoiceModal Button { margin: 1 1 0 1; }
    """
    BINDINGS = [("escape", "cancel", "Cancel")]

    def __init__(
        self, lines: Sequence[str], choices: Sequence[tuple[str, str, Variant]], cancel_id: str
    ) -> None:
        super().__init__()
        self.lines = lines
        self.choices = choices
        self.cancel_id = cancel_id

    def compose(self) -> ComposeResult:
        with Vertical():
            for line in self.lines:
                yield Label(line)
            with Horizontal():
                for choice_id, label, variant in self.choices:
                    yield Button(label, variant=variant, id=choice_id)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or self.cancel_id)

    def action_cancel(self) -> None:
        self.dismiss(self.cancel_id)


def quit_modal(endpoint: str) -> ChoiceModal:
    return ChoiceModal(
        [f"The round-robin cluster is serving at {endpoint}.", "Leave it serving after you quit?"],
        [
            ("leave", "Leave serving", "primary"),
            ("stop", "Stop it", "warning"),
            ("cancel", "Cancel", "default"),
        ],
        "cancel",
    )


def leftovers_modal(descriptions: Sequence[str]) -> ChoiceModal:
    shown = list(descriptions[:6]) + (
        [f"… and {len(descriptions) - 6} more"] if len(descriptions) > 6 else []
    )
    return ChoiceModal(
        ["An earlier lab ended without stopping these processes:", *shown, "Stop them now?"],
        [("stop", "Stop them", "warning"), ("leave", "Leave them", "default")],
        "leave",
    )
