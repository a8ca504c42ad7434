"""R in the results screen resumes a sweep; a detached run is followed, left, rejoined and
stopped from the app. Real llama-server, nginx and HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import (
    settings,
    six_cell_sweep,
    states,
    wait_for,
)
from tui_lab.app import LabApp
from tui_lab.engine.events import CellStarted, Event, RunFinished, RunStarted
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.run_settings import build_plan, lab_config
from tui_lab.engine.sweeps import detached
from tui_lab.engine.sweeps.resume import recorded_config
from tui_lab.engine.sweeps.runner import cell_row
from tui_lab.screens.results import ResultsScreen
from tui_lab.widgets.run_progress import RunProgress

pytestmark = pytest.mark.integration


async def test_R_resumes_the_selected_sweep_with_its_recorded_settings(tmp_path: Path) -> None:
    recorded = settings(
        tmp_path, kind="sweep-round-robin", instances="1", parallel="1", concurrency="1,2"
    )
    plan = build_plan(recorded)
    lab = lab_config(recorded, need_nginx=True)
    with ResultsWriter(lab.results_dir, plan.run, recorded_config(recorded, plan, lab), {}) as w:
        w.write(cell_row(plan, 1, plan.cells[0], None, None, None))  # cell 1 done, then a crash
    # The form now holds another run: resuming must not use it.
    app = LabApp(recorded.with_values(kind="test-single", n_predict="16"), telemetry_interval_s=1)
    seen: list[Event] = []
    emit = app.emit
    app.emit = lambda event: (seen.append(event), emit(event))[-1]  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("v")
        assert isinstance(app.screen, ResultsScreen)
        await pilot.press("R")
        await wait_for(pilot, lambda: any(isinstance(e, RunFinished) for e in seen))
        await wait_for(pilot, lambda: not app.run_active)
        await pilot.press("q")
    assert [e for e in seen if isinstance(e, RunStarted)] == [
        RunStarted("sweep-round-robin", 2, plan.cells[1].requests)
    ]
    assert [e.index for e in seen if isinstance(e, CellStarted)] == [2]
    rows = read_rows(w.jsonl_path)
    assert [r["cell"] for r in rows] == [1, 2]
    assert rows[1]["n_predict"] == 8 and rows[1]["concurrency"] == 2
    assert rows[1]["output_tokens"] == rows[1]["server_output_tokens"] == 8 * 4
    written = (w.csv_path, w.jsonl_path, w.meta_path)
    assert sorted(lab.results_dir.iterdir()) == sorted(written)  # the same files, appended to


async def test_a_detached_run_outlives_the_app_which_rejoins_and_stops_it(tmp_path: Path) -> None:
    s = six_cell_sweep(tmp_path).with_values(detach=True)  # the form's "Detached" box
    app = LabApp(s, telemetry_interval_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.attached is not None, 60)
        state = app.attached
        assert state is not None and "detached: sweep-round-robin" in app.dashboard.status
        await wait_for(pilot, lambda: "ready" in states(app, "run").values(), 60)
        await pilot.press("q")
    try:
        assert detached.alive(state), "the detached run ended with the app"
        again = LabApp(s, telemetry_interval_s=0.5)
        async with again.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: again.attached is not None, 10)  # rejoined at start
            progress = again.dashboard.query_one(RunProgress).tracker
            await wait_for(pilot, lambda: progress.cells_done >= 1, 120)
            await pilot.press("x")
            await wait_for(pilot, lambda: again.attached is None, 90)
            await pilot.press("q")
        assert not detached.alive(state)
        assert 1 <= len(read_rows(state.jsonl)) < 6
    finally:
        detached.stop(state)
