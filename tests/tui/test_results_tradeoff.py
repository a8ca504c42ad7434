"""The results screen's trade-off tab, its report key and its compare key, on the real app.

The folder holds two sweeps: a real full sweep of the default model (8 cells, n_predict 8) and
the same rows as an adaptive run's full cells under a 1000 ms p99 bound, so four of them are
drawn apart. Both are copied to the test's own folder, as the report key writes beside them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, TabbedContent

from tests.helpers import quiet_app, wait_for
from tui_lab.engine.results.pareto import front
from tui_lab.screens.compare import CompareScreen
from tui_lab.screens.compare_choice import CompareChoice
from tui_lab.screens.results import ResultsScreen
from tui_lab.widgets.tradeoff_plot import TradeoffPlot

DATA = Path(__file__).resolve().parent.parent / "data" / "tradeoff"
ADAPTIVE = "sweep-adaptive-20261202T030000Z.jsonl"
FULL = "sweep-full-20261202T034054Z.jsonl"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """The adaptive run newest, so the screen opens on it."""
    folder = tmp_path / "results"
    shutil.copytree(DATA, folder)
    os.utime(folder / FULL, (1_000_000, 1_000_000))
    os.utime(folder / ADAPTIVE, (2_000_000, 2_000_000))
    return folder


async def _open_tradeoff(pilot: Pilot[None]) -> None:
    await pilot.press("v")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen), 10)
    await pilot.click("#--content-tab-tab-tradeoff")
    await pilot.pause(0.3)


def test_snapshot_tradeoff_tab(snap_compare: Callable[..., bool], results: Path) -> None:
    assert snap_compare(quiet_app(results), terminal_size=(120, 40), run_before=_open_tradeoff)


async def test_tradeoff_tab_marks_the_front_and_the_cells_over_the_bound(results: Path) -> None:
    app = quiet_app(results)
    async with app.run_test(size=(120, 40)) as pilot:
        await _open_tradeoff(pilot)
        screen = pilot.app.screen
        assert screen.query_one(TabbedContent).active == "tab-tradeoff"
        plot = screen.query_one(TradeoffPlot)
        assert [p.label for p in front(plot.points)] == ["1×1 c=2", "2×1 c=2"]
        apart = sorted(p.label for p in plot.points if p.apart)  # p99 over the 1000 ms bound
        assert apart == ["1×1 c=4", "1×2 c=4", "2×1 c=4", "2×2 c=4"]


async def test_report_key_writes_the_report_beside_the_results_and_says_where(
    results: Path,
) -> None:
    app = quiet_app(results)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen), 10)
        await pilot.press("e")
        html = results / ADAPTIVE.replace(".jsonl", ".report.html")
        await wait_for(
            pilot, lambda: any("report written" in n.message for n in app._notifications), 60
        )
        assert html.is_file() and html.with_suffix(".md").is_file()
        assert any(str(html) in n.message for n in app._notifications)


async def test_compare_key_puts_the_chosen_sweep_beside_this_one(results: Path) -> None:
    app = quiet_app(results)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen), 10)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareChoice), 10)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen), 10)
        screen = pilot.app.screen
        cells = screen.query_one("#compare-cells", DataTable)
        assert cells.row_count == 8
        differences = screen.query_one("#compare-differences", DataTable)
        names = {str(differences.get_row_at(i)[1]) for i in range(differences.row_count)}
        assert {"kind", "max_p99_ms"} <= names
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, ResultsScreen)


def test_snapshot_compare_screen(snap_compare: Callable[..., bool], results: Path) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen), 10)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareChoice), 10)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CompareScreen), 10)
        await pilot.pause(0.3)

    assert snap_compare(quiet_app(results), terminal_size=(120, 40), run_before=run_before)
