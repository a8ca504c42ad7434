"""Many fake llama-servers in one process on its own core, and a PID for each to watch.

tui_cost and telemetry_cost measure the lab at a GPU box's scale (64 instances) on a box that
cannot run 64 real servers: the servers are tests/fake_llama_server.py instances (completion,
/metrics, /slots) in one process pinned to the other core, and each "instance" the lab watches
is a `sleep` process, which psutil reads exactly as it reads a llama-server without children.

Run alone: python -m benchmarks.fake_farm DELAY COUNT (prints the base URLs as JSON, serves until
its stdin closes).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.report import pinned

FARM_CORE = 1


def serve(delay_s: float, count: int) -> None:
    from tests.fake_llama_server import FakeLlamaServer

    async def run() -> None:
        servers = [FakeLlamaServer(delay_s=delay_s, slots=64) for _ in range(count)]
        for s in servers:
            await s.start()
        print(json.dumps([s.base_url for s in servers]), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for s in servers:
            await s.stop()

    asyncio.run(run())


@contextmanager
def farm(delay_s: float, count: int) -> Iterator[list[str]]:
    """The servers' base URLs, while they run."""
    me = [sys.executable, "-m", "benchmarks.fake_farm"]
    proc = subprocess.Popen(
        [*pinned(FARM_CORE), *me, str(delay_s), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        proc.communicate(input="", timeout=30)


@contextmanager
def stand_ins(count: int) -> Iterator[list[int]]:
    """PIDs of `count` idle processes, one per watched instance, killed on exit."""
    procs = [subprocess.Popen(["sleep", "infinity"]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    serve(float(sys.argv[1]), int(sys.argv[2]))
