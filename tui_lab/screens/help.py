"""Every key and what it does, on `?`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# llamalab-tui

| key | action |
|---|---|
| `c` | configure the run: kind, lists, model, ports |
| `s` | start the configured run |
| `x` | cancel the run (servers stopped, finished cells kept) |
| `r` | start / stop the round-robin cluster for outside clients |
| `k` | restart the selected instance |
| `l` | show the selected process's log (under 100 columns in the plot's place; `l` again: plot) |
| `v` | results: every cell, best and ties marked, plots; `R` resumes; `w` serves the best |
| `e` `m` | on results: write its report (HTML + Markdown); compare with another sweep |
| `ctrl+p` | command palette: every action, preset and results file by name |
| `q` | quit (asks about a running cluster) |

Figures come from the processes themselves: `-` means not measured (yet), never zero.
The cluster's OpenAI-compatible endpoint is `http://HOST:NGINX_PORT/v1`.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 72; height: 80%; border: thick $accent; }
    """
    BINDINGS = [("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
