"""The order of a repeated plan's measurements: every cell once, then every cell again.

Interleaved rather than back to back, so a drift of the box (another job starting, a warming
CPU) spreads over all cells instead of landing on the few measured while it lasted. Each pass
keeps the plan's layout order, and every other pass runs it backwards (a serpentine): the layout
that ends one pass begins the next, so its servers are reused rather than started again. A
plan of L layouts and K passes starts servers K·(L-1)+1 times, not K·L.
"""

from __future__ import annotations

from collections.abc import Sequence

from tui_lab.engine.plan.config import Cell

Numbered = tuple[int, Cell]  # a cell with its 1-based index in the plan


def interleaved(cells: Sequence[Numbered], repeats: int) -> list[tuple[int, int, Cell]]:
    """(pass, index, cell) for `repeats` passes over `cells`, serpentine."""
    order: list[tuple[int, int, Cell]] = []
    for number in range(1, repeats + 1):
        this_pass = cells if number % 2 else list(reversed(cells))
        order += [(number, index, cell) for index, cell in this_pass]
    return order


def server_starts(cells: Sequence[Cell], repeats: int = 1) -> int:
    """How many times the servers start for these cells in this order (a layout change starts
    them; the prompt cache aside, which starts them for every cell)."""
    numbered = list(enumerate(cells, 1))
    layouts = [cell.layout for _, _, cell in interleaved(numbered, repeats)]
    return sum(1 for i, layout in enumerate(layouts) if i == 0 or layout != layouts[i - 1])
