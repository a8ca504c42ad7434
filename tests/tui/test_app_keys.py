"""The app's keys as a person presses them, against the real llama-server, nginx and HTTP."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from textual.widgets import DataTable

from tests.helpers import settings, six_cell_sweep, states, wait_for
from tui_lab.app import LabApp
from tui_lab.engine.processes import standing_cluster
from tui_lab.screens.choice_modal import ChoiceModal
from tui_lab.screens.cluster_modal import ClusterModal
from tui_lab.screens.help import HelpScreen
from tui_lab.widgets.instance_table import InstanceTable
from tui_lab.widgets.log_pane import LogPane

pytestmark = pytest.mark.integration


async def test_r_starts_the_cluster_a_completion_passes_and_r_stops_it(tmp_path: Path) -> None:
    app = LabApp(settings(tmp_path), telemetry_interval_s=0.5)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("r")
            assert isinstance(app.screen, ClusterModal)
            await pilot.click("#cluster-start")
            await wait_for(
                pilot,
                lambda: (
                    app.cluster is not None
                    and all(i.state == "ready" for i in app.cluster.instances)
                ),
            )
            await wait_for(
                pilot, lambda: list(states(app, "cluster").values()).count("ready") >= 2, 20
            )
            assert app.cluster is not None
            endpoint = app.cluster.endpoint
            status = str(app.dashboard.query_one("#status-line").render())
            assert f"{endpoint}/v1" in status
            async with aiohttp.ClientSession() as http:
                body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
                async with http.post(f"{endpoint}/v1/chat/completions", json=body) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["usage"]["completion_tokens"] > 0
            await pilot.press("r")
            await wait_for(pilot, lambda: app.cluster is None, 60)
            assert standing_cluster.running_state() is None
            await pilot.press("q")
    finally:
        standing_cluster.stop_running()


async def test_s_runs_the_configured_test_and_writes_results(tmp_path: Path) -> None:
    app = LabApp(settings(tmp_path), telemetry_interval_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.runner is not None)
        await wait_for(pilot, lambda: app.runner is None and not app.run_active)
        rows = list((tmp_path / "results").glob("test-concurrent-*.jsonl"))
        assert len(rows) == 1 and rows[0].read_text().count("\n") == 1
        await pilot.press("l")  # the log of the selected (first) row
        await wait_for(pilot, lambda: app.dashboard.query_one(LogPane).line_count > 0, 10)
        await pilot.press("q")


async def test_x_cancels_a_sweep_keeping_finished_cells(tmp_path: Path) -> None:
    s = six_cell_sweep(tmp_path)
    app = LabApp(s, telemetry_interval_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        results = tmp_path / "results"
        await wait_for(
            pilot, lambda: any(p.read_text().count("\n") >= 1 for p in results.glob("*.jsonl"))
        )
        await pilot.press("x")
        await wait_for(pilot, lambda: not app.run_active, 60)
        (jsonl,) = results.glob("*.jsonl")
        assert 1 <= jsonl.read_text().count("\n") < 6
        await wait_for(pilot, lambda: set(states(app, "run").values()) == {"stopped"}, 20)
        await pilot.press("q")


async def test_k_restarts_the_selected_instance_during_a_run(tmp_path: Path) -> None:
    s = settings(tmp_path, kind="test-round-robin", n_predict="32", concurrency="2", requests="40")
    app = LabApp(s, telemetry_interval_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: "ready" in states(app, "run").get("run-nginx-0", ""))
        table = app.dashboard.query_one(InstanceTable)
        pid_before = table.rows_info["run-server-0"].state.pid
        table.cursor_row = table.row_index("run-server-0")
        await pilot.press("k")
        await wait_for(pilot, lambda: table.rows_info["run-server-0"].state.pid != pid_before, 60)
        await wait_for(pilot, lambda: not app.run_active, 120)
        await pilot.press("q")


async def test_help_and_command_palette_list_every_action(tmp_path: Path) -> None:
    app = LabApp(settings(tmp_path), telemetry_interval_s=5)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        commands = [c.title for c in app.get_system_commands(app.screen)]
        for title in (
            "Configure",
            "Start",
            "Cancel",
            "Cluster",
            "Restart",
            "Log",
            "Results",
            "Quit",
        ):
            assert title in commands
        await pilot.press("x")  # nothing to cancel: a message, no crash
        await pilot.press("q")
    assert app.return_code == 0 or app.return_code is None


async def test_q_with_a_cluster_up_asks_and_can_leave_it_serving(tmp_path: Path) -> None:
    s = settings(tmp_path, instances="1", parallel="1")
    from tui_lab.engine.settings.run_settings import cluster_args, cluster_layout, lab_config

    lab = lab_config(s, need_nginx=True)
    await asyncio.to_thread(
        standing_cluster.start_detached, lab, cluster_layout(s).instances, cluster_args(s), 120
    )
    try:
        app = LabApp(s, telemetry_interval_s=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.cluster is not None, 20)
            await wait_for(pilot, lambda: "ready" in states(app, "cluster").values(), 20)
            await pilot.press("q")
            assert isinstance(app.screen, ChoiceModal)
            await pilot.click("#leave")
            await pilot.pause(0.5)
        assert standing_cluster.running_state() is not None  # left serving, as asked
    finally:
        standing_cluster.stop_running()
    assert standing_cluster.running_state() is None


async def test_v_shows_results_with_the_best_cell_and_sorts(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    rows = [
        {
            "cell": i,
            "instances": n,
            "parallel": p,
            "concurrency": c,
            "n_predict": 8,
            "output_tok_per_s": tps,
            "requests_per_s": 1.0,
            "e2el_ms_p99": 10.0,
            "requests_failed": 0,
            "error": err,
        }
        for i, (n, p, c, tps, err) in enumerate(
            [
                (1, 1, 1, 40.0, None),
                (1, 1, 8, 55.5, None),
                (2, 4, 8, 99.0, "crashed"),
                (2, 4, 1, 61.25, None),
            ],
            1,
        )
    ]
    (results / "sweep-full-x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    app = LabApp(settings(tmp_path), telemetry_interval_s=5)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("v")
        await pilot.pause(0.3)
        summary = str(app.screen.query_one("#results-summary").render())
        assert "Recommended: 2 instances × 4 slots, up to 1 client: 61 tok/s in all" in summary
        table = app.screen.query_one("#results-table", DataTable)
        assert table.row_count == 4
        tok_per_s = app.screen.columns.index("output_tok_per_s")
        table.move_cursor(column=tok_per_s)
        await pilot.press("o")
        assert str(table.get_row_at(0)[tok_per_s]) == "99.0"
        grid = app.screen.query_one("#results-grid", DataTable)
        assert grid.row_count == 2  # instances 1 and 2; the failed 2x4 cell at c=8 is left out
        assert [str(c) for c in grid.get_row_at(1)] == ["2", "-", "61.2"]
        await pilot.press("escape")
        await pilot.press("q")
