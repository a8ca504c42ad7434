"""An API key guards the exposed port: nginx refuses requests without it, llama-server too, and
the lab's own load and polls carry it, so no figure goes missing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from tui_lab.engine.events import Event, InstanceTelemetry
from tui_lab.engine.plan.config import LabConfig, Layout, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, round_robin
from tui_lab.engine.processes.cluster import Cluster, ClusterSpec
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.sweeps.runner import PlanRunner
from tui_lab.engine.telemetry.collector import TelemetryCollector, Watched

pytestmark = pytest.mark.integration
KEY = "s3cret-key_1"
BODY = {"prompt": "hi", "n_predict": 2}


async def status(http: aiohttp.ClientSession, url: str, key: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with http.post(f"{url}/completion", json=BODY, headers=headers) as resp:
        return resp.status


async def test_keyed_run_measures_everything_and_strangers_are_refused(
    lab: LabConfig, tmp_path: Path
) -> None:
    keyed = replace(lab, api_key=KEY)
    load = LoadSettings(n_predict=8, requests=4)
    plan = round_robin(2, 2, 2, "round_robin", load, ServerOptions(threads=1))
    events: list[Event] = []
    outcome = await PlanRunner(plan, keyed, load, events.append, tmp_path / "run", None).run()
    (row,) = outcome.rows
    assert row["requests_ok"] == 4 and row["requests_failed"] == 0
    # The servers' own counters were read with the key, so they are there and agree.
    assert row["server_output_tokens"] == row["output_tokens"] == 32

    cluster = Cluster(
        keyed,
        ClusterSpec(Layout(2, 1, 512, threads=1), "round_robin", 4),
        tmp_path / "c",
        events.append,
    )
    collector = TelemetryCollector(lambda _: None)
    try:
        async with control_session() as session:
            await cluster.start(session)
        async with aiohttp.ClientSession() as http:
            assert await status(http, cluster.url, None) == 401
            assert await status(http, cluster.url, "wrong") == 401
            assert await status(http, cluster.instances[0].url, None) == 401
            assert await status(http, cluster.url, KEY) == 200
        inst = cluster.instances[0]
        assert inst.pid is not None
        collector.watch(Watched("server", 0, inst.pid, inst.url, api_key=KEY))
        (sample,) = [s for s in await collector.sample_once() if isinstance(s, InstanceTelemetry)]
        assert sample.answering and sample.slots_total == 1
    finally:
        collector.close()
        await cluster.stop()
