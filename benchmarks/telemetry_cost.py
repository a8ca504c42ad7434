"""Benchmark: what the telemetry collector itself costs while it watches 16 real llama-servers,
and 16 and 64 fake ones (a GPU box's scale).

The panel samples every instance once a second (psutil for the process and its children,
/metrics and /slots over HTTP, NVML where there is a GPU); on a 2-core box that must stay a
small share of one core, or the lab would slow down what it measures. Sixteen real llama-server
instances (the default model, --parallel 1, 256 tokens of context, one thread each: idle, they
cost little) are watched by one collector in this process, and this process's CPU time (all its
threads: psutil and NVML run in worker threads) is read over each run. The reference is the
same loop with only `asyncio.sleep` in it, so what an idle event loop costs is subtracted.
Each figure is the median of --repeats runs, interleaved so noise hits all modes alike.

The fake rows watch fake llama-servers (benchmarks/fake_farm.py, on the other core) answering
/metrics and /slots, each "instance" an idle stand-in process of its own for psutil: what one
more instance costs the collector, at sizes this box cannot run for real.

Run: .venv/bin/python benchmarks/telemetry_cost.py   (or python -m benchmarks.telemetry_cost)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` importable as with `python -m`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fake_farm import farm, stand_ins
from benchmarks.report import machine_note, mid, print_table
from tui_lab.engine.events import InstanceTelemetry, MachineTelemetry, ignore
from tui_lab.engine.machine.discovery import find_model, find_server
from tui_lab.engine.machine.preflight import require_fit
from tui_lab.engine.plan.config import LabConfig, Layout
from tui_lab.engine.processes.cluster import Cluster, ClusterSpec
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.telemetry.collector import TelemetryCollector, Watched

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


def watching(cluster: Cluster) -> list[Watched]:
    watched = []
    for inst in cluster.instances:
        assert inst.pid is not None
        watched.append(Watched("server", inst.index, inst.pid, inst.url))
    return watched


async def measure(
    watched: list[Watched], seconds: float, repeats: int
) -> tuple[dict[str, list[Measured]], str]:
    """The runs of each mode, and what the collector said about the GPU."""
    collector = TelemetryCollector(ignore)
    for item in watched:
        collector.watch(item)
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


def report(
    measured: list[tuple[str, int, dict[str, list[Measured]]]],
    gpu: str,
    seconds: float,
    repeats: int,
) -> None:
    """One row per (servers, instances, mode); the idle row is measured with each."""
    rows = []
    for source, instances, runs in measured:
        idle_cpu = mid([m.cpu_per_wall for m in runs[IDLE]]) or 0.0
        for name, runs_of_mode in runs.items():
            cpu = mid([m.cpu_per_wall for m in runs_of_mode]) or 0.0
            rounds = mid([m.rounds / m.wall_s for m in runs_of_mode]) or 0.0
            samples = mid([m.samples / m.wall_s for m in runs_of_mode]) or 0.0
            own = cpu - idle_cpu
            per_round = f"{own / rounds * 1000:.1f}" if rounds and samples else "-"
            per_instance = f"{own / samples * 1000:.2f}" if samples else "-"
            rows.append(
                [
                    source,
                    str(instances),
                    name,
                    f"{rounds:.2f}",
                    f"{samples:.1f}",
                    f"{cpu:.4f}",
                    f"{own:.4f}",
                    per_round,
                    per_instance,
                ]
            )
    print_table(
        f"Telemetry collector watching N llama-server instances (real: default model, "
        f"--parallel 1; fake: benchmarks/fake_farm.py); {repeats} runs of {seconds:.0f} s, medians",
        [
            "servers",
            "N",
            "mode",
            "rounds/s",
            "samples/s",
            "CPU s per s",
            "minus idle",
            "CPU ms/round",
            "ms/instance",
        ],
        rows,
        [
            "CPU s per s: this process's CPU time (all threads) over wall time; 1.0 = one core",
            "minus idle: the same less the idle asyncio.sleep loop, i.e. the collector's own cost",
            "ms/instance: CPU ms per instance sample; flat across N means no cost grows with N^2",
            f"GPU: {gpu}",
            machine_note(),
        ],
    )


async def real_rows(
    instances: int, seconds: float, repeats: int, base_port: int
) -> tuple[dict[str, list[Measured]], str]:
    layout = dataclasses.replace(LAYOUT, instances=instances)
    lab = LabConfig(
        server_bin=find_server(), model=find_model(), nginx_bin=None, base_port=base_port
    )
    require_fit(lab.model, layout)
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as run_dir:
        cluster = Cluster(lab, ClusterSpec(layout, "round_robin", 1), Path(run_dir), ignore)
        started = time.monotonic()
        try:
            async with control_session() as session:
                await cluster.start(session)
            took = time.monotonic() - started
            print(f"{instances} llama-server instances ready in {took:.0f} s", file=sys.stderr)
            return await measure(watching(cluster), seconds, repeats)
        finally:
            await cluster.stop()


async def fake_rows(
    sizes: list[int], seconds: float, repeats: int
) -> list[tuple[int, dict[str, list[Measured]], str]]:
    out = []
    with farm(0.0, max(sizes)) as urls, stand_ins(max(sizes)) as pids:
        for size in sizes:
            watched = [Watched("server", i, pids[i], urls[i]) for i in range(size)]
            print(f"{size} fake instances ...", file=sys.stderr)
            out.append((size, *await measure(watched, seconds, repeats)))
    return out


async def main_async(args: argparse.Namespace) -> None:
    measured: list[tuple[str, int, dict[str, list[Measured]]]] = []
    gpu = "not read"
    if args.real:
        runs, gpu = await real_rows(args.real, args.seconds, args.repeats, args.base_port)
        measured.append(("real", args.real, runs))
    sizes = [int(n) for n in args.fake.split(",") if n]
    if sizes:
        fakes = await fake_rows(sizes, args.seconds, args.repeats)
        measured += [("fake", size, runs) for size, runs, _ in fakes]
        gpu = fakes[-1][2]
    report(measured, gpu, args.seconds, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wall time of one run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--base-port", type=int, default=18100, help="port of instance 0")
    parser.add_argument(
        "--real", type=int, default=INSTANCES, help="real llama-servers to watch (0: none)"
    )
    parser.add_argument(
        "--fake", default="16,64", help="sizes of fake instances, comma-separated ('': none)"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
