"""Telemetry of a real llama-server under real load, then after it stops.

The figures the panel shows must come from the process itself: its CPU and memory from the OS,
its slots and token counter from its own endpoints. On this GPU-less box the GPU column must
say why it is empty rather than show 0.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tui_lab.engine.events import Event, InstanceTelemetry
from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.plan.config import Layout, server_argv
from tui_lab.engine.processes.instance import ServerInstance, control_session
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.telemetry.collector import TelemetryCollector, Watched

pytestmark = pytest.mark.integration


async def test_real_server_under_load_then_stopped(
    server_bin: Path, model: Path, tmp_path: Path
) -> None:
    events: list[Event] = []
    port = free_port_block(1)
    layout = Layout(instances=1, parallel=2, ctx_size=512, threads=1)
    argv = server_argv(server_bin, model, "127.0.0.1", port, layout)
    inst = ServerInstance(0, "127.0.0.1", port, argv, tmp_path / "s.log", events.append)
    collector = TelemetryCollector(lambda _: None)
    samples: list[InstanceTelemetry] = []

    async def sample() -> InstanceTelemetry:
        (found,) = [s for s in await collector.sample_once() if isinstance(s, InstanceTelemetry)]
        samples.append(found)
        return found

    try:
        await inst.start()
        async with control_session() as session:
            await inst.wait_ready(session, 120)
        assert inst.pid is not None
        collector.watch(Watched("server", 0, inst.pid, inst.url, inst.process.log_path))
        await sample()
        spec = LoadSpec(url=inst.url, concurrency=2, requests=6, n_predict=32)
        load = asyncio.create_task(run_load(spec))
        while not load.done():
            await asyncio.sleep(0.3)
            await sample()
        result = await load
        last = await sample()
    finally:
        await inst.stop()
    stopped = await sample()
    collector.close()

    assert all(r.ok for r in result.records)
    assert all(s.alive and s.answering for s in samples[:-1])
    assert any(s.cpu_percent is not None and s.cpu_percent > 0 for s in samples)
    assert all(s.rss_bytes is not None and s.rss_bytes > 50_000_000 for s in samples[:-1])
    assert all(s.slots_total == 2 for s in samples[:-1])
    assert max(s.slots_busy or 0 for s in samples) >= 1
    assert samples[0].tokens_predicted_total is not None
    assert last.tokens_predicted_total == samples[0].tokens_predicted_total + 6 * 32
    # Requests served come from the server's own log: none before the load, all six after.
    assert samples[0].requests_served == 0 and last.requests_served == 6
    # Live while requests run, not only when one finishes and the server's counter moves.
    busy = [s for s in samples[1:] if s.slots_busy]
    generating = [s for s in busy if s.tokens_per_s is not None and s.tokens_per_s > 0]
    assert len(generating) >= max(3, len(busy) // 2)
    assert all(s.gpu_memory_bytes is None and s.gpu_reason for s in samples)
    assert not stopped.alive and not stopped.answering
    assert stopped.rss_bytes is None and stopped.slots_total is None
