"""What the dashboard looks like at 80x24 and 120x40: empty, and with a run's rows filled in.

The telemetry collector is kept out (CPU figures differ per run); the rows are fed hand-made
engine events, exactly as the app's adapter would post them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from textual.pilot import Pilot

from tests.helpers import machine_sample, quiet_app, sample
from tui_lab.app import LabApp
from tui_lab.engine.events import Event, ProcessState
from tui_lab.messages import EngineEvents
from tui_lab.screens.choice_modal import ChoiceModal, leftovers_modal, quit_modal
from tui_lab.widgets import instance_table
from tui_lab.widgets.throughput_plot import ThroughputPlot


def feed(app: LabApp) -> None:
    plot = app.dashboard.query_one(ThroughputPlot)
    t0 = plot.t0
    now = instance_table.time.time()  # the engine started the ready ones just now: "0:00" up
    events: list[Event] = [
        ProcessState("server", 0, 8100, 4242, "ready", started=now),
        ProcessState("server", 1, 8101, 4243, "loading"),
        ProcessState("nginx", 0, 8000, 4250, "ready", started=now),
        sample(0, 4242, time=t0 + 1.0),
    ]
    app.dashboard.post_message(EngineEvents(tuple(events)))
    # The engine's total for that round (a MachineTelemetry's), given to the plot alone: the
    # machine line stays empty, as the collector is kept out.
    plot.apply_machine(machine_sample(t0 + 1.0, 87.5))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_dashboard_empty(snap_compare: object, size: tuple[int, int]) -> None:
    async def settle(pilot: object) -> None:
        await pilot.pause(0.3)  # type: ignore[attr-defined]

    assert snap_compare(quiet_app(), terminal_size=size, run_before=settle)  # type: ignore[operator]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_dashboard_with_instances(
    snap_compare: object, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clock the uptime column reads stands still: on a busy box the frame can come a
    # second after the feed, and "0:00" would read "0:01".
    stopped = time.time()
    monkeypatch.setattr(instance_table, "time", SimpleNamespace(time=lambda: stopped))

    async def run_before(pilot: Pilot[None]) -> None:
        await pilot.pause()
        feed(pilot.app)  # type: ignore[arg-type]
        plot = pilot.app.query_one(ThroughputPlot)
        deadline = time.monotonic() + 10
        while plot._dirty or any(
            w.group == "plot" and not w.is_finished for w in pilot.app.workers
        ):
            assert time.monotonic() < deadline, "the plot was not drawn"
            await pilot.pause(0.05)
        await pilot.pause()

    assert snap_compare(quiet_app(), terminal_size=size, run_before=run_before)  # type: ignore[operator]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@pytest.mark.parametrize("keys", [["v"], ["v", "right", "right"], ["question_mark"], ["r"]])
def test_snapshot_screens(snap_compare: object, size: tuple[int, int], keys: list[str]) -> None:
    """Results (cells, instances x parallel), help and the cluster modal, from the dashboard."""

    async def settle(pilot: object) -> None:
        await pilot.pause(0.5)  # type: ignore[attr-defined]

    assert snap_compare(quiet_app(), press=keys, terminal_size=size, run_before=settle)  # type: ignore[operator]


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@pytest.mark.parametrize(
    "modal",
    [
        lambda: quit_modal("http://127.0.0.1:8000"),
        lambda: leftovers_modal(["llama-server #0 (pid 4242, 20261125-000000-sweep-full-1)"]),
    ],
    ids=["quit", "leftovers"],
)
def test_snapshot_choice_modals(
    snap_compare: object, size: tuple[int, int], modal: Callable[[], ChoiceModal]
) -> None:
    async def run_before(pilot: object) -> None:
        await pilot.app.push_screen(modal())  # type: ignore[attr-defined]
        await pilot.pause(0.3)  # type: ignore[attr-defined]

    assert snap_compare(quiet_app(), terminal_size=size, run_before=run_before)  # type: ignore[operator]
