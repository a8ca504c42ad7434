"""Benchmark: what the telemetry collector itself costs while it watches 16 real llama-servers.

The panel samples every instance once a second (psutil for the process and its children,
/metrics and /slots over HTTP, NVML where there is a GPU); on a 2-core box that must stay a
small share of one core, or the lab would slow down what it measures. Sixteen real llama-server
instances (the default model, --parallel 1, 256 tokens of context, one thread each: idle, they
cost little) are watched by one collector in this process, and this process's CPU time (all its
threads: psutil and NVML run in worker threads) is read over each run. The reference is the
same loop with only `asyncio.sleep` in it, so what an idle event loop costs is subtracted.
Each figure is the median of --repeats runs, interleaved so noise hits all modes alike.

Run: .venv/bin/python benchmarks/telemetry_cost.py   (or python -m benchmarks.telemetry_cost)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` importable as with `python -m`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import machine_note, mid, print_table
from tui_lab.engine.cluster import Cluster, ClusterSpec
from tui_lab.engine.config import LabConfig, Layout
from tui_lab.engine.discovery import find_model, find_server
from tui_lab.engine.events import ignore
from tui_lab.engine.instance import control_session
from tui_lab.engine.preflight import require_fit
from tui_lab.engine.telemetry import (
    InstanceTelemetry,
    MachineTelemetry,
    TelemetryCollector,
    Watched,
)

INSTANCES = 16
IDLE = "idle reference (asyncio.sleep 1 s)"
LAYOUT = Layout(instances=INSTANCES, parallel=1, ctx_size=256, threads=1, proxied=False)


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float  # this process, every thread
    rounds: int
    samples: int  # instance samples emitted

    @property
    def cpu_per_wall(self) -> float:
        return self.cpu_s / self.wall_s


async def timed(seconds: float, step: Callable[[], Awaitable[int]]) -> Measured:
    """Repeat `step` (which returns the instance samples it took) for `seconds` of wall time."""
    rounds = samples = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < seconds:
        samples += await step()
        rounds += 1
    return Measured(time.monotonic() - wall0, time.process_time() - cpu0, rounds, samples)


def watching(cluster: Cluster) -> TelemetryCollector:
    collector = TelemetryCollector(ignore)
    for inst in cluster.instances:
        assert inst.pid is not None
        collector.watch(Watched("server", inst.index, inst.pid, inst.url))
    return collector


async def measure(
    cluster: Cluster, seconds: float, repeats: int
) -> tuple[dict[str, list[Measured]], str]:
    """The runs of each mode, and what the collector said about the GPU."""
    collector = watching(cluster)
    gpu = ["NVML read"]

    async def one_round() -> int:
        taken = await collector.sample_once()
        for sample in taken:
            if isinstance(sample, MachineTelemetry) and sample.gpu_reason:
                gpu[0] = sample.gpu_reason
        return sum(1 for s in taken if isinstance(s, InstanceTelemetry))

    async def paced() -> int:
        started = time.monotonic()
        count = await one_round()
        await asyncio.sleep(max(0.0, collector.interval_s - (time.monotonic() - started)))
        return count

    async def idle() -> int:
        await asyncio.sleep(collector.interval_s)
        return 0

    modes = {
        IDLE: idle,
        "collector, 1 s interval (default)": paced,
        "collector, back to back": one_round,
    }
    runs: dict[str, list[Measured]] = {name: [] for name in modes}
    try:
        await one_round()  # first round: no CPU interval yet, HTTP connections cold
        for _ in range(repeats):
            for name, step in modes.items():
                runs[name].append(await timed(seconds, step))
    finally:
        collector.close()
    return runs, gpu[0]


def report(runs: dict[str, list[Measured]], gpu: str, seconds: float, repeats: int) -> None:
    idle_cpu = mid([m.cpu_per_wall for m in runs[IDLE]]) or 0.0
    rows = []
    for name, measured in runs.items():
        cpu = mid([m.cpu_per_wall for m in measured]) or 0.0
        rounds = mid([m.rounds / m.wall_s for m in measured]) or 0.0
        samples = mid([m.samples / m.wall_s for m in measured]) or 0.0
        own = cpu - idle_cpu
        per_round = f"{own / rounds * 1000:.1f}" if rounds and samples else "-"
        rows.append(
            [name, f"{rounds:.2f}", f"{samples:.1f}", f"{cpu:.4f}", f"{own:.4f}", per_round]
        )
    print_table(
        f"Telemetry collector watching {INSTANCES} real llama-server instances "
        f"(default model, --parallel 1); {repeats} runs of {seconds:.0f} s, medians",
        [
            "mode",
            "rounds/s",
            "samples/s",
            "CPU s per s",
            "minus idle",
            "CPU ms/round",
        ],
        rows,
        [
            "CPU s per s: this process's CPU time (all threads) over wall time; 1.0 = one core",
            "minus idle: the same less the idle asyncio.sleep loop, i.e. the collector's own cost",
            f"GPU: {gpu}",
            machine_note(),
        ],
    )


async def main_async(seconds: float, repeats: int, base_port: int) -> None:
    lab = LabConfig(
        server_bin=find_server(), model=find_model(), nginx_bin=None, base_port=base_port
    )
    require_fit(lab.model, LAYOUT)
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as run_dir:
        cluster = Cluster(lab, ClusterSpec(LAYOUT, "round_robin", 1), Path(run_dir), ignore)
        started = time.monotonic()
        try:
            async with control_session() as session:
                await cluster.start(session)
            took = time.monotonic() - started
            print(f"{INSTANCES} llama-server instances ready in {took:.0f} s", file=sys.stderr)
            runs, gpu = await measure(cluster, seconds, repeats)
        finally:
            await cluster.stop()
    report(runs, gpu, seconds, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time of one run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-port", type=int, default=18100, help="port of instance 0")
    args = parser.parse_args()
    asyncio.run(main_async(args.seconds, args.repeats, args.base_port))


if __name__ == "__main__":
    main()
