"""The standing cluster's healing rules, and nginx's reload that takes an instance out of the
rotation, against the real nginx in front of fake servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from tests.fake_llama_server import FakeLlamaServer
from tests.helpers import cluster_state
from tui_lab.engine.events import Event
from tui_lab.engine.processes.cluster_health import (
    MAX_DELAY_S,
    Incident,
    restart_delay,
)
from tui_lab.engine.processes.nginx_config import STANDING_FAILOVER, ProxySpec
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.processes.proxy import NginxProxy
from tui_lab.engine.processes.standing_cluster import ClusterState


def test_restarts_back_off_doubling_up_to_a_cap_so_a_crashing_model_does_not_loop_hot() -> None:
    assert [restart_delay(n) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert restart_delay(50) == MAX_DELAY_S == 60.0


def test_the_history_survives_the_state_file_and_reads_as_a_sentence() -> None:
    incident = Incident(1_700_000_000.0, 1, "hung", "pid 42: no answer to /health for 10 s")
    state = cluster_state(incident)
    again = ClusterState.from_json(json.loads(json.dumps(state.to_json())))
    assert again.history == (incident,)
    assert incident.describe().endswith(" server 1 hung: pid 42: no answer to /health for 10 s")
    assert Incident(0.0, 0, "back in rotation").describe().endswith("server 0 back in rotation")


async def _stream(session: aiohttp.ClientSession, url: str) -> str:
    body = {"messages": [], "max_tokens": 20, "stream": True}
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        return (await resp.read()).decode()


def test_a_reload_takes_an_instance_out_without_dropping_its_stream(
    tmp_path: Path, nginx_bin: Path
) -> None:
    async def scenario() -> None:
        events: list[Event] = []
        fakes = [FakeLlamaServer(token_delay_s=0.1), FakeLlamaServer(token_delay_s=0.1)]
        for fake in fakes:
            await fake.start()
        upstreams = tuple(("127.0.0.1", int(f.base_url.rsplit(":", 1)[1])) for f in fakes)
        spec = ProxySpec(
            "127.0.0.1", free_port_block(1), upstreams, tmp_path, failover=STANDING_FAILOVER
        )
        proxy = NginxProxy(nginx_bin, spec, events.append)
        try:
            async with aiohttp.ClientSession() as session:
                await proxy.start(session)
                workers = proxy.worker_pids()
                streaming = asyncio.create_task(_stream(session, proxy.url))
                await asyncio.sleep(0.5)  # under way: 20 tokens take 2 s
                serving = next(i for i, f in enumerate(fakes) if f.in_flight)
                await proxy.reload(frozenset({serving}))
                assert proxy.worker_pids() - workers, "no new worker: nginx did not reload"
                assert "[DONE]" in await streaming  # the old worker finished it
                before = len(fakes[serving].bodies)
                for _ in range(4):
                    await _stream(session, proxy.url)
                assert len(fakes[serving].bodies) == before  # none sent to the one taken out
                await proxy.reload(frozenset())
                for _ in range(4):
                    await _stream(session, proxy.url)
                assert len(fakes[serving].bodies) > before  # back in the rotation
        finally:
            await proxy.stop()
            for fake in fakes:
                await fake.stop()

    asyncio.run(scenario())
