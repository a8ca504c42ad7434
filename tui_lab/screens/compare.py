"""Two sweeps side by side, as `llamalab compare` prints them: how the runs differ, then each
matching cell's delta and whether it exceeds the intervals."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from tui_lab.engine.results.compare import PAIR_COLUMNS, Comparison, difference_rows, pair_row
from tui_lab.engine.results.report import figure_cell

DIFFERENCE_COLUMNS = ("what", "name", "A", "B")


class CompareScreen(Screen[None]):
    DEFAULT_CSS = """
    CompareScreen Label { padding: 0 1; }
    CompareScreen #compare-differences { height: auto; max-height: 40%; }
    CompareScreen #compare-cells { height: 1fr; }
    """
    BINDINGS = [("escape", "app.pop_screen", "Back")]

    def __init__(self, comparison: Comparison) -> None:
        super().__init__()
        self.comparison = comparison

    def compose(self) -> ComposeResult:
        c = self.comparison
        yield Label(f"A: {c.a}\nB: {c.b}", id="compare-files")
        differences = difference_rows(c)
        yield Label(
            "Differences in machine and settings (they may explain the deltas):"
            if differences
            else "Same machine and settings."
        )
        yield DataTable(id="compare-differences", cursor_type="row", zebra_stripes=True)
        only = [
            f"{what}: {', '.join(c.name(k) for k in keys)}"
            for what, keys in (("only in A", c.only_a), ("only in B", c.only_b))
            if keys
        ]
        yield Label(
            f"{len(c.pairs)} cells in both; deltas are B - A. "
            "within the noise: the 95 % intervals overlap; no interval: a row has none"
            + "".join(f"\n{line}" for line in only)
        )
        yield DataTable(id="compare-cells", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._fill("#compare-differences", DIFFERENCE_COLUMNS, difference_rows(self.comparison))
        rows = [pair_row(self.comparison, p) for p in self.comparison.pairs]
        self._fill("#compare-cells", PAIR_COLUMNS, rows)

    def _fill(self, selector: str, columns: tuple[str, ...], rows: list[dict[str, object]]) -> None:
        table = self.query_one(selector, DataTable)
        table.add_columns(*columns)
        table.display = bool(rows)
        for row in rows:
            table.add_row(*(figure_cell(row[c]) for c in columns))
