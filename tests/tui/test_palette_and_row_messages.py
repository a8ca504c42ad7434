"""The command palette's presets and results files, and the instance table's requests (k, l)
posted as messages that the app and the dashboard act on, in the real LabApp."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult

from tests.helpers import quiet_app
from tui_lab.engine.events import ProcessState
from tui_lab.engine.settings.presets import save_preset
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.screens.results import ResultsScreen
from tui_lab.widgets.instance_table import InstanceTable
from tui_lab.widgets.log_pane import LogPane


def notices(app: App[None]) -> list[str]:
    return [n.message for n in app._notifications]


async def test_typing_a_presets_name_in_the_palette_applies_it() -> None:
    save_preset("wide sweep", RunSettings(model="", kind="sweep-full", concurrency="1,8,64"))
    app = quiet_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"wide sweep")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert (app.settings.kind, app.settings.concurrency) == ("sweep-full", "1,8,64")
        assert any("preset wide sweep" in text for text in notices(app))


async def test_a_results_file_from_the_palette_opens_the_results_screen_on_it() -> None:
    app = quiet_app()  # its results folder is tests/data/results
    wanted = next(Path(app.settings.results).glob("*.jsonl"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*f"results: {wanted.stem}")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert isinstance(app.screen, ResultsScreen) and app.screen.current == wanted


def feed(app: App[None], *events: ProcessState) -> None:
    for event in events:
        app.emit(event)  # type: ignore[attr-defined]
    app._flush_events()  # type: ignore[attr-defined]


async def test_l_asks_the_dashboard_for_the_selected_rows_log(tmp_path: Path) -> None:
    log = tmp_path / "server-0.log"
    log.write_text("model loaded\n")
    app = quiet_app()
    async with app.run_test(size=(100, 30)) as pilot:
        feed(app, ProcessState("server", 0, 8100, None, "loading", log_path=log))
        await pilot.pause()
        await pilot.press("l")
        await pilot.pause()
        assert app.dashboard.query_one(LogPane).path == log


async def test_k_on_a_row_the_app_cannot_restart_says_why() -> None:
    app = quiet_app()
    async with app.run_test(size=(100, 30)) as pilot:
        feed(
            app,
            ProcessState("nginx", 0, 8000, None, "loading"),
            ProcessState("server", 0, 9100, None, "loading", owner="cluster"),
        )
        await pilot.pause()
        await pilot.press("k", "l")  # nginx: not a llama-server, and no log
        await pilot.press("down", "k")  # the cluster's server: not the run's
        await pilot.pause()
        assert notices(app)[-3:] == [
            "select a llama-server row first",
            "select a process row first",
            "only a running test's servers restart in place",
        ]


async def test_the_table_posts_its_requests_for_the_selected_row() -> None:
    posted: list[object] = []

    class Listener(App[None]):
        def compose(self) -> ComposeResult:
            yield InstanceTable()

        def on_instance_table_restart_requested(self, m: InstanceTable.RestartRequested) -> None:
            posted.append(("restart", m.process.owner, m.process.index))

        def on_instance_table_log_requested(self, m: InstanceTable.LogRequested) -> None:
            posted.append(("log", m.log_path))

    async with Listener().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 3, 8103, 42, "ready", log_path=Path("s3.log")))
        table.request_restart()
        table.request_log()
        await pilot.pause()
        assert posted == [("restart", "run", 3), ("log", Path("s3.log"))]
