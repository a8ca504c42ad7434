"""The real `LabApp`, its own stylesheet and all, at 80x24 and 120x40: the dashboard, the form,
results, help and the cluster dialog, reached by their keys as a person reaches them.

Screens pushed into a bare test app once hid a defect that only the app's stylesheet made
(the form's Instances field was 9 lines tall). Nothing here may depend on the machine: the
folders are the test's own, the paths are made up, the telemetry collector is kept out (its CPU
figures differ per run) and the results folder is a relative path to a fixed file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from tui_lab.app import LabApp
from tui_lab.engine.events import ProcessState
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.messages import EngineEvents
from tui_lab.screens.cluster_modal import ClusterModal
from tui_lab.screens.configure import ConfigureScreen
from tui_lab.screens.dashboard import DashboardScreen
from tui_lab.screens.help import HelpScreen
from tui_lab.screens.results import ResultsScreen

DATA = Path(__file__).resolve().parent.parent / "data"
SIZES = [(80, 24), (120, 40)]
SETTINGS = RunSettings(
    instances="1,2",
    parallel="1,4",
    concurrency="1,8",
    n_predict="64",
    threads="4",
    server_bin="/opt/lab/bin/llama-server",
    model="/opt/lab/models/tiny.gguf",
    nginx_bin="/opt/lab/bin/nginx",
    results="results",  # relative to DATA: the same text in every checkout
)
LONG_WAITS = ("cluster-watch",)  # workers that run as long as the app: not waited for


@pytest.fixture(autouse=True)
def own_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings, standing cluster, detached run or leftovers of whoever runs the tests."""
    monkeypatch.setenv("LLAMALAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAMALAB_CONFIG", str(tmp_path / "config"))
    monkeypatch.chdir(DATA)


def lab_app() -> LabApp:
    app = LabApp(SETTINGS, telemetry_interval_s=3600)

    async def no_telemetry() -> None:
        return None

    app.collector.run = no_telemetry  # type: ignore[method-assign]
    return app


async def settle(pilot: Pilot[None], screen: type[Screen[Any]]) -> None:
    """Until `screen` is on top and its workers (the form's checks, a search) are done; a
    focused field's cursor steady, since a blinking one is on or off by the machine's speed."""
    for _ in range(100):
        busy = [w for w in pilot.app.workers if w.group not in LONG_WAITS and not w.is_finished]
        if isinstance(pilot.app.screen, screen) and not busy:
            break
        await asyncio.sleep(0.05)
    assert isinstance(pilot.app.screen, screen), pilot.app.screen
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.3)
    await pilot.wait_for_scheduled_animations()


def after(keys: list[str], screen: type[Screen[Any]]) -> Callable[[Pilot[None]], object]:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, DashboardScreen)
        await pilot.press(*keys)
        await settle(pilot, screen)

    return run_before


SCREENS: dict[str, tuple[list[str], type[Screen[Any]]]] = {
    "dashboard": ([], DashboardScreen),
    "configure": (["c"], ConfigureScreen),
    "results": (["v"], ResultsScreen),
    "help": (["question_mark"], HelpScreen),
    "cluster": (["r"], ClusterModal),
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", SCREENS)
def test_snapshot(snap_compare: Callable[..., bool], name: str, size: tuple[int, int]) -> None:
    keys, screen = SCREENS[name]
    assert snap_compare(lab_app(), terminal_size=size, run_before=after(keys, screen))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_dashboard_with_a_servers_log(
    snap_compare: Callable[..., bool], size: tuple[int, int], tmp_path: Path
) -> None:
    """`l` on a loading server: at 80 columns its log takes the plot's place, at 120 it is
    beside the plot. Loading, not ready: a ready row's uptime would tick while the test waits."""
    log = tmp_path / "server-0.log"
    log.write_text("".join(f"{line}\n" for line in SERVER_LOG))

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot, DashboardScreen)
        app = pilot.app
        assert isinstance(app, LabApp)
        loading = ProcessState("server", 0, 8100, 4242, "loading", log_path=log)
        app.dashboard.post_message(EngineEvents((loading,)))
        await pilot.pause()
        await pilot.press("l")
        await settle(pilot, DashboardScreen)

    assert snap_compare(lab_app(), terminal_size=size, run_before=run_before)


SERVER_LOG = (
    "main: loading model",
    "srv    load_model: loading model '/opt/lab/models/tiny.gguf'",
    "llama_model_loader: loaded meta data with 24 key-value pairs and 111 tensors",
    "load_tensors: offloading 0 repeating layers to GPU",
    "llama_context: n_ctx_per_seq (2048) < n_ctx_train (4096)",
    "srv          init: initializing slots, n_slots = 4",
    "slot         init: id  0 | task -1 | new slot, n_ctx = 2048",
    "main: model loaded",
    "main: server is listening on http://127.0.0.1:8100 - starting the main loop",
)
