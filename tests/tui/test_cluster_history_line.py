"""The status line says what the standing cluster last healed, read from its state file as the
app reads any cluster's, whoever started it."""

from __future__ import annotations

import os

import psutil

from tests.helpers import cluster_state, quiet_app, wait_for
from tui_lab.engine.processes.cluster_health import Incident
from tui_lab.engine.processes.standing_cluster import state_path, write_state


async def test_the_status_line_shows_the_clusters_last_healing_step() -> None:
    # This test's own process stands in for the supervisor: alive, so the state is not stale.
    state = cluster_state(
        Incident(1_700_000_000.0, 1, "hung", "pid 42: no answer to /health for 10 s"),
        Incident(1_700_000_003.0, 1, "back in rotation", "nginx reloaded"),
        supervisor_pid=os.getpid(),
        supervisor_started=psutil.Process().create_time(),
    )
    write_state(state)
    app = quiet_app()
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: "server 1 back in rotation" in app.dashboard.status, 20)
            assert "nginx reloaded" not in app.dashboard.status  # the detail is for `status`
    finally:
        state_path().unlink()
