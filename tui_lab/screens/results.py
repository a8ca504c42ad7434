"""Every cell of a sweep, the best one marked, and tok/s against concurrency."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, OptionList, TabbedContent, TabPane
from textual_plotext import PlotextPlot

from tui_lab.engine.results.compare import compare
from tui_lab.engine.results.intervals import CI_HIGH, CI_LOW
from tui_lab.engine.results.pareto import tradeoff
from tui_lab.engine.results.ranking import RANKED_BY, best_cell, layouts_at, marks
from tui_lab.engine.results.reader import ResultsFileError, Row, read_rows
from tui_lab.engine.results.recommendation import recommendation
from tui_lab.engine.results.report import write_report
from tui_lab.engine.results.sweep_file import load_sweep, recorded_bounds
from tui_lab.messages import ResumeSweep, StartWinner
from tui_lab.screens.compare import CompareScreen
from tui_lab.screens.compare_choice import CompareChoice
from tui_lab.widgets.tradeoff_plot import TradeoffPlot

COLUMNS = (
    "cell",
    "mark",  # best, or tie: its interval overlaps the best's
    "instances",
    "parallel",
    "concurrency",
    "rate",
    "n_predict",
    "output_tok_per_s",
    CI_LOW,
    CI_HIGH,
    "requests_per_s",
    "e2el_ms_p99",
    "cache_hit_rate",
    "prefill_tok_per_s",
    "decode_tok_per_s",
    "achieved_rate",  # open loop: against `rate`
    "client_queue_max",
    "deferred_max",  # requests waiting for a slot at the servers
    "instance_deferred_max",
    "instance_kv_max",
    "requests_failed",
    "error",
)
FIELD = RANKED_BY
# Shown only where a row of the file has them: a sweep measured once has no interval, a closed
# loop no rate, a build without the KV gauge no KV figure; empty columns would push the ones
# that matter off an 80-column screen.
WHEN_FILLED = frozenset(
    {
        "rate",
        CI_LOW,
        CI_HIGH,
        "cache_hit_rate",
        "prefill_tok_per_s",
        "decode_tok_per_s",
        "achieved_rate",
        "client_queue_max",
        "deferred_max",
        "instance_deferred_max",
        "instance_kv_max",
    }
)


def shown_columns(rows: Sequence[Row]) -> tuple[str, ...]:
    """COLUMNS less those no row of the file has a value for."""
    return tuple(
        c
        for c in COLUMNS
        if c not in WHEN_FILLED or any(row.get(c) not in (None, "") for row in rows)
    )


def _cell_text(value: object, column: str = "") -> str:
    if value is None:
        return "-"
    if column == "cache_hit_rate" and isinstance(value, float):
        return f"{value:.0%}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


class ResultsScreen(Screen[None]):
    BINDINGS = [
        ("escape", "app.pop_screen", "Back"),
        ("o", "sort", "Sort by column"),
        ("R", "resume", "Resume"),
        ("w", "start_winner", "Serve best"),
        ("e", "write_report", "Report"),
        ("m", "compare", "Compare"),
    ]

    def __init__(self, results_dir: Path, selected: Path | None = None) -> None:
        super().__init__()
        self.results_dir = results_dir
        self.files = sorted(
            results_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        self.current = selected if selected is not None else (self.files[0] if self.files else None)
        self.rows: list[dict[str, object]] = []
        self.columns: tuple[str, ...] = ()  # the table's, from shown_columns
        self._sort_reverse = True

    def compose(self) -> ComposeResult:
        yield Label("", id="results-summary")
        with TabbedContent():
            with TabPane("Cells", id="tab-cells"):
                yield DataTable(id="results-table", zebra_stripes=True, cursor_type="cell")
            with TabPane("tok/s vs concurrency", id="tab-plot"):
                yield PlotextPlot(id="results-plot")
            with TabPane("instances × parallel", id="tab-grid"):
                yield Label("", id="grid-caption")
                yield DataTable(id="results-grid", cursor_type="none")
            with TabPane("trade-off", id="tab-tradeoff"):
                yield TradeoffPlot(id="results-tradeoff")
            with TabPane("Files", id="tab-files"):
                yield OptionList(*(p.name for p in self.files), id="results-files")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_results()

    def refresh_results(self) -> None:
        """Reload the file (a running sweep appends a row per cell)."""
        summary = self.query_one("#results-summary", Label)
        if self.current is None:
            summary.update(f"No results yet in {self.results_dir}")
            return
        try:
            self.rows = read_rows(self.current)
        except ResultsFileError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            self.rows = []
        best = best_cell(self.rows)
        csv = self.current.with_suffix(".csv")
        text = f"{self.current.name} ({len(self.rows)} cells; also {csv.name})"
        words = recommendation(self.rows)
        if words is not None:
            text += f"\nRecommended: {words} (w serves it)"
        summary.update(text)
        self._fill_table(best)
        self._plot()
        self._grid(best)
        self._show_tradeoff()

    def _best_style(self) -> Style:
        """The best cell in the theme's success colour."""
        return Style(bold=True, color=self.app.theme_variables["success"])

    def _fill_table(self, best: Row | None) -> None:
        table = self.query_one(DataTable)
        columns = shown_columns(self.rows)
        if columns != self.columns:
            table.clear(columns=True)
            for column in columns:
                table.add_column(column, key=column)
            self.columns = columns
        table.clear()
        for row, mark in zip(self.rows, marks(self.rows), strict=True):
            style = self._best_style() if row is best else ""
            cells = [
                Text(mark if c == "mark" else _cell_text(row.get(c), c), style=style)
                for c in columns
            ]
            table.add_row(*cells, key=str(row.get("cell")))

    def _plot(self) -> None:
        series: dict[tuple[object, object], list[tuple[float, float]]] = defaultdict(list)
        for row in self.rows:
            value, conc = row.get(FIELD), row.get("concurrency")
            if not row.get("error") and isinstance(value, int | float) and isinstance(conc, int):
                series[(row.get("instances"), row.get("parallel"))].append((conc, float(value)))
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("tok/s by concurrency, one line per instances × parallel")
        for (instances, parallel), points in sorted(series.items(), key=str):
            xs, ys = zip(*sorted(points), strict=True)
            plt.plot(xs, ys, label=f"{instances}×{parallel}", marker="braille")
        plot.refresh()

    def _grid(self, best: Row | None) -> None:
        """tok/s of each (instances, parallel) at the best cell's concurrency, best marked."""
        grid = self.query_one("#results-grid", DataTable)
        grid.clear(columns=True)
        caption = self.query_one("#grid-caption", Label)
        if best is None:
            caption.update("no successful cell yet")
            return
        conc = best["concurrency"]
        values = layouts_at(self.rows, conc)
        instances = sorted({k[0] for k in values}, key=str)
        parallels = sorted({k[1] for k in values}, key=str)
        caption.update(f"tok/s at concurrency {conc}: instances (rows) × parallel (columns)")
        grid.add_column("instances \\ parallel", key="n")
        for p in parallels:
            grid.add_column(str(p), key=str(p))
        for n in instances:
            cells = []
            for p in parallels:
                v = values.get((n, p))
                top = (n, p) == (best["instances"], best["parallel"])
                cells.append(
                    Text("-" if v is None else f"{v:.1f}", style=self._best_style() if top else "")
                )
            grid.add_row(str(n), *cells)

    def action_sort(self) -> None:
        """Sort by the column under the cursor; pressing again reverses the order."""
        table = self.query_one(DataTable)
        column = self.columns[table.cursor_column]

        def key(text: Text) -> tuple[int, float | str]:
            raw = text.plain
            try:
                return (0, float(raw))
            except ValueError:
                return (1, raw)

        table.sort(column, key=key, reverse=self._sort_reverse)
        self._sort_reverse = not self._sort_reverse

    def action_resume(self) -> None:
        """Back to the dashboard, which runs the cells of this sweep that have no row yet."""
        if self.current is None:
            self.notify("no sweep to resume", severity="warning")
            return
        self.app.pop_screen()
        self.app.post_message(ResumeSweep(self.current))

    def action_start_winner(self) -> None:
        """Ask the app to start the standing cluster of the recommended cell."""
        if self.current is None:
            self.notify("no results to pick a winner from", severity="warning")
            return
        self.app.post_message(StartWinner(self.current))

    def _show_tradeoff(self) -> None:
        """The trade-off of this file's cells, under the latency bounds its sweep recorded."""
        assert self.current is not None
        try:
            bounds = recorded_bounds(self.current)
        except ResultsFileError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.query_one(TradeoffPlot).show(tradeoff(self.rows, bounds))

    @work(exclusive=True, group="report")
    async def action_write_report(self) -> None:
        """The report of the sweep on screen, beside its results file; drawn off the loop."""
        if self.current is None:
            self.notify("no sweep to report on", severity="warning")
            return
        current = self.current
        try:
            files = await asyncio.to_thread(lambda: write_report(load_sweep(current)))
        except ResultsFileError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.notify(f"report written: {files.html} (and {files.markdown.name})", timeout=15)

    def action_compare(self) -> None:
        """Compare the sweep on screen (A) with another of the folder (B), chosen in a list."""
        if self.current is None or len(self.files) < 2:
            self.notify("compare needs two results files in this folder", severity="warning")
            return
        self.app.push_screen(CompareChoice(self.current, self.files), self._compare_with)

    async def _compare_with(self, other: Path | None) -> None:
        if other is None or self.current is None:
            return
        a, b = self.current, other
        try:
            comparison = await asyncio.to_thread(lambda: compare(load_sweep(a), load_sweep(b)))
        except ResultsFileError as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.app.push_screen(CompareScreen(comparison))

    @on(OptionList.OptionSelected, "#results-files")
    def _choose_file(self, event: OptionList.OptionSelected) -> None:
        self.current = self.files[event.option_index]
        self.refresh_results()
        self.query_one(TabbedContent).active = "tab-cells"
