"""The results screen of a repeated sweep: best and tie marked, the recommendation in words,
and `w`, which serves the recommended cell as the standing cluster (real llama-server and
nginx, an OpenAI client's chat through it, nothing left once stopped)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from openai import AsyncOpenAI
from textual.widgets import DataTable

from tests.helpers import DATA, settings, wait_for
from tui_lab.app import LabApp
from tui_lab.engine.processes import standing_cluster
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.screens.results import ResultsScreen

REPEATS = DATA / "repeats"


def notices(app: LabApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_the_results_screen_marks_the_best_and_its_tie() -> None:
    app = LabApp(RunSettings(model="", results=str(REPEATS)), telemetry_interval_s=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("v")
        await pilot.pause(0.3)
        assert isinstance(app.screen, ResultsScreen)
        table = app.screen.query_one("#results-table", DataTable)
        mark = app.screen.columns.index("mark")
        assert [str(table.get_row_at(i)[mark]) for i in range(table.row_count)] == [
            "",
            "",
            "tie",
            "best",
        ]
        summary = str(app.screen.query_one("#results-summary").render())
        assert "Recommended: 1 instance × 2 slots, up to 2 clients: 62 tok/s in all" in summary
        assert "tied within the intervals: 1×2 c=1 (60 tok/s)" in summary
        await pilot.press("escape", "q")


async def test_w_without_a_clean_cell_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "sweep-full-x.jsonl").write_text(
        json.dumps({"cell": 1, "output_tok_per_s": 5.0, "error": "crashed"}) + "\n"
    )
    app = LabApp(RunSettings(model="", results=str(tmp_path)), telemetry_interval_s=3600)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("v")
        await pilot.pause(0.3)
        await pilot.press("w")
        await wait_for(pilot, lambda: not app.cluster_busy and len(notices(app)) >= 2, 10)
        assert "sweep-full-x.jsonl: no cell ran cleanly, so there is no winner to start" in (
            notices(app)
        )
        assert app.cluster is None
        await pilot.press("escape", "q")


@pytest.mark.integration
async def test_w_serves_the_recommended_cell_an_openai_client_chats_and_r_stops_it(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    shutil.copytree(REPEATS, results)
    app = LabApp(settings(tmp_path), telemetry_interval_s=5)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.press("v")
            await pilot.pause(0.3)
            await pilot.press("w")
            await wait_for(
                pilot,
                lambda: (
                    app.cluster is not None
                    and all(i.state == "ready" for i in app.cluster.instances)
                ),
            )
            cluster = app.cluster
            assert cluster is not None
            assert len(cluster.instances) == 1  # the best row's layout: 1 instance x 2 slots
            assert any(f"{cluster.endpoint}/v1" in text for text in notices(app))
            client = AsyncOpenAI(base_url=f"{cluster.endpoint}/v1", api_key="none")
            reply = await client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Say hi"}],
                max_tokens=8,
            )
            assert reply.usage is not None and reply.usage.completion_tokens > 0
            await client.close()
            await pilot.press("w")  # a second winner while one serves: one line, nothing started
            await pilot.pause(0.2)
            assert any("a cluster already serves at" in text for text in notices(app))
            await pilot.press("escape", "r")
            await wait_for(pilot, lambda: app.cluster is None, 60)
            assert standing_cluster.running_state() is None
            await pilot.press("q")
    finally:
        standing_cluster.stop_running()
