"""The pre-flight estimate against what a real llama-server with the default model takes.

Tolerance: the estimate must not be below the measured RSS (it exists to prevent an OOM, so it
must not under-count) and at most 20 % above it. At 2 slots x 1024 tokens each slot holds no
more than the sliding window (512) + ubatch (512), so the KV cache is counted exactly and the
margin is the stated overhead's headroom: +7-9 % measured on this box (RSS 380-384 MB,
estimate 412 MB). A term dropped or counted twice moves it by more: the weights (235 MiB) twice
is +65 %, without the fixed overhead (96 MiB) it falls below the RSS.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.machine.preflight import check
from tui_lab.engine.plan.config import Layout, server_argv
from tui_lab.engine.processes.instance import ServerInstance, control_session
from tui_lab.engine.processes.ports import free_port_block

pytestmark = pytest.mark.integration


async def test_estimate_covers_the_measured_rss_of_a_real_server(
    server_bin: Path, model: Path, tmp_path: Path
) -> None:
    port = free_port_block(1)
    layout = Layout(instances=1, parallel=2, ctx_size=2048, threads=1)
    argv = server_argv(server_bin, model, "127.0.0.1", port, layout)
    inst = ServerInstance(0, "127.0.0.1", port, argv, tmp_path / "s.log", lambda _: None)
    verdict = check(model, layout)
    try:
        await inst.start()
        async with control_session() as session:
            await inst.wait_ready(session, 120)
        # Requests on both slots: every weight is read, so all of the mapped file is resident.
        result = await run_load(LoadSpec(url=inst.url, concurrency=2, requests=4, n_predict=32))
        assert inst.pid is not None
        rss = psutil.Process(inst.pid).memory_info().rss
    finally:
        await inst.stop()
    assert all(r.ok for r in result.records)
    assert verdict.fits
    estimated = verdict.estimate.per_instance
    print(f"estimate {estimated / 1e6:.1f} MB, RSS {rss / 1e6:.1f} MB ({estimated / rss:.3f}x)")
    assert rss <= estimated <= 1.20 * rss
