"""Benchmark 1c: what the TUI costs while it watches N instances with N x 64 requests in flight.

Two sizes side by side: 16 instances (1,024 in flight), this box's scale, and 64 (4,096 in
flight), a GPU box's (an H200 serves a small model from 32-64 instances). The TUI (LabApp,
headless through Textual's `run_test` at 120x40: layout and rendering run, nothing reaches a
terminal) gets the events a real run sends: N ready instances (watched by its telemetry every
second) and one RequestDone per finished request, from N x 64 clients of our load generator
running in the load thread (engine/load/load_thread.py: its own thread and event loop, records
handed to the app's loop in batches), as a real run's cells do. The load is one client group per
instance, where a run sends one to nginx: the same requests, more record batches. The servers
are in-process fake llama-servers (benchmarks/fake_farm.py) in a separate process on the other
core, each answering after --delay seconds, so C in flight make about C / delay requests/s; real
llama-servers on this box finish far fewer, so this is a harsh case for the event path. The
telemetry reads each server's /metrics and /slots and, for its process, an idle stand-in
process of its own, as it would a real server's.

Measured over a window after a warm-up, in this process (pinned to one core): event-loop lag
(how late a 10 ms sleep wakes up, p99, in the app's loop), CPU % of one core (both threads),
RSS. The same load without the app is the reference: the app's own CPU is the difference.

Figures before the load thread (BEFORE_THREAD and the earlier ones) had the load in the app's
own loop, so a burst of responses delayed the app's timers by however long the burst took, app
or no app. A burst needs a busy box (the load and the servers kept off their cores for a while):
on a quiet one both variants meet the target. `--hogs N` makes one: N spinning processes per core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import psutil

from benchmarks.fake_farm import farm, stand_ins
from benchmarks.report import machine_note, mid, pinned, print_table
from tui_lab.engine.events import CellStarted, ProcessState, RequestDone, RunStarted
from tui_lab.engine.load.client import LoadSpec, RequestRecord
from tui_lab.engine.load.load_thread import LoadThread
from tui_lab.engine.load.stats import percentiles
from tui_lab.engine.settings.run_settings import RunSettings

SIZES, CLIENTS_EACH = (16, 64), 64  # instances measured; clients per instance
PROBE_S = 0.010
TARGET_LAG_MS, TARGET_CPU = 16.0, 15.0  # at the largest size
# Before the instance table stopped re-rendering unchanged values (commit b6f20cc), measured
# back to back with the change on one quiet day: compare the pair, not with this run's figures.
BEFORE = (
    "before (b6f20cc), another day: 16 instances, lag p99 16.6 ms, TUI's own CPU 10%, "
    "RSS 86 MB (after, that day: 14.1 ms, 6%, 85 MB)"
)
# Before the line-based instance panel (2c2d0df, DataTable), back to back with it, one day.
BEFORE_SCALE = (
    "before (2c2d0df, DataTable), another day: lag p99 36.8 / 72.0 ms at 16 / 64 instances, "
    "own CPU 8 / 12% (after, that day: 15.5 / 53.5 ms, 7 / 8%; load alone 4.5 / 32.7 ms)"
)

# Before the load thread (f522d5d: the load in the app's loop), back to back with it on one day,
# 64 instances (the busy box: --hogs 1 and 2). Taken earlier that day beside a real-server
# benchmark: 28.8 ms with the app, 31.1 ms alone. The harm shows on a busy box, in bursts.
BEFORE_THREAD = (
    "before the load thread (f522d5d), 64 instances, one day, back to back: quiet box lag p99 "
    "9.4 ms (alone 2.0), own CPU 11% (after: 9.0, 2.1, 11%); one CPU hog per core 19.7 / 18.3 "
    "ms (alone 8.8 / 8.6; after: 15.4 / 15.6, alone 4.2 / 4.7); two per core 43.4 ms (alone "
    "11.1; after: 18.7, alone 9.2)"
)


async def window(
    urls: list[str],
    on_record: Callable[[RequestRecord], None],
    warmup_s: float,
    span_s: float,
    backlog: Callable[[], int] = lambda: 0,
) -> dict[str, float]:
    """Load + lag probe; CPU and lag are taken over `span_s` after `warmup_s`. `backlog` is
    read at each probe: the most events that waited for a frame."""
    lags: list[float] = []
    waiting: list[int] = []
    done = 0

    def record(r: RequestRecord) -> None:
        nonlocal done
        done += 1
        on_record(r)

    async def probe() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            lags.append(time.perf_counter() - t - PROBE_S)
            waiting.append(backlog())

    specs = [LoadSpec(url=u, concurrency=CLIENTS_EACH, requests=10**7, n_predict=64) for u in urls]
    load = LoadThread()
    tasks = [asyncio.create_task(load.run(s, on_record=record)) for s in specs]
    tasks.append(asyncio.create_task(probe()))
    await asyncio.sleep(warmup_s)
    lags.clear()
    waiting.clear()
    done0, cpu0, t0 = done, time.process_time(), time.perf_counter()
    await asyncio.sleep(span_s)
    cpu, wall, n = time.process_time() - cpu0, time.perf_counter() - t0, done - done0
    lag = percentiles([x * 1000 for x in lags])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    load.close()
    return {
        "lag_p99_ms": lag.p99 or 0.0,
        "lag_p50_ms": lag.p50 or 0.0,
        "lag_max_ms": max(lags, default=0.0) * 1000,
        "cpu_pct": 100 * cpu / wall,
        "req_s": n / wall,
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "backlog_max": max(waiting, default=0),
    }


async def with_app(urls: list[str], pids: list[int], warmup_s: float, span_s: float) -> dict:
    from tui_lab.app import LabApp

    app = LabApp(RunSettings(), telemetry_interval_s=1.0)
    async with app.run_test(size=(120, 40)):
        app.emit(RunStarted("bench-tui-cost", 1, 10**7))
        app.emit(
            CellStarted(1, 1, {"instances": len(urls), "concurrency": len(urls) * CLIENTS_EACH})
        )
        for i, (url, pid) in enumerate(zip(urls, pids, strict=True)):
            port = int(url.rsplit(":", 1)[1])
            app.emit(ProcessState("server", i, port, pid, "ready", url=url))
        return await window(
            urls,
            lambda r: app.emit(RequestDone(1, r)),
            warmup_s,
            span_s,
            lambda: app.bridge.waiting,
        )


async def without_app(urls: list[str], warmup_s: float, span_s: float) -> dict:
    return await window(urls, lambda r: None, warmup_s, span_s)


@contextmanager
def busy(per_core: int) -> Iterator[None]:
    """`per_core` spinning processes pinned to each core, as other work on a shared box."""
    spin = [sys.executable, "-c", "while True: pass"]
    cores = range(psutil.cpu_count() or 1)
    hogs = [subprocess.Popen([*pinned(c), *spin]) for c in cores for _ in range(per_core)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def measure(run: Callable[[], Awaitable[dict]], profile: bool = False) -> dict:
    """The figures; with `profile`, where this process spent its time, to stderr."""
    if not profile:
        return asyncio.run(run())
    from pyinstrument import Profiler

    with Profiler(interval=0.001, async_mode="disabled") as profiler:
        figures = asyncio.run(run())
    print(profiler.output_text(color=False, unicode=False, flat=True), file=sys.stderr)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=2.0, help="seconds per fake request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hogs", type=int, default=0, help="CPU-bound processes per core beside it: a busy box"
    )
    parser.add_argument("--span", type=float, default=10.0)
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, SIZES)),
        help="instances to measure, comma-separated (64 clients each)",
    )
    parser.add_argument("--child", choices=("app", "bare"))
    parser.add_argument("--urls", default="")
    parser.add_argument("--pids", default="", help="the instances' stand-in processes")
    parser.add_argument(
        "--profile", action="store_true", help="one run, and where the TUI's process spent its time"
    )
    args = parser.parse_args()
    if args.child:
        urls = args.urls.split(",")
        if args.child == "app":
            figures = measure(
                lambda: with_app(urls, [int(p) for p in args.pids.split(",")], 3.0, args.span),
                profile=args.profile,
            )
        else:
            figures = measure(lambda: without_app(urls, 3.0, args.span))
        print(json.dumps(figures))
        return
    sizes = [int(n) for n in args.sizes.split(",")]
    me = [sys.executable, "-m", "benchmarks.tui_cost"]
    if args.profile:
        args.repeats = 1
    results: dict[tuple[int, str], list[dict]] = {}
    # One farm for every size: the servers a smaller size leaves idle cost nothing.
    with (
        farm(args.delay, max(sizes)) as urls,
        stand_ins(max(sizes)) as pids,
        busy(args.hogs),
    ):
        for _ in range(args.repeats):
            for size in sizes:
                for kind in ("app", "bare"):
                    cmd = [*pinned(0), *me, "--child", kind, "--urls", ",".join(urls[:size])]
                    cmd += ["--pids", ",".join(map(str, pids[:size])), "--span", str(args.span)]
                    cmd += ["--profile"] if args.profile else []
                    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                    results.setdefault((size, kind), []).append(figures)
                    if args.profile and kind == "app":
                        print(f"---- {size} instances ----\n{done.stderr}", file=sys.stderr)

    def med(size: int, kind: str, key: str) -> float:
        return mid([r[key] for r in results[(size, kind)]]) or 0.0

    def own_cpu(size: int) -> float:
        return med(size, "app", "cpu_pct") - med(size, "bare", "cpu_pct")

    rows = [
        [
            str(size),
            f"{size * CLIENTS_EACH:,}",
            f"{med(size, 'app', 'req_s'):,.0f}",
            f"{med(size, 'app', 'lag_p50_ms'):.1f}",
            f"{med(size, 'app', 'lag_p99_ms'):.1f}",
            f"{med(size, 'bare', 'lag_p99_ms'):.1f}",
            f"{med(size, 'app', 'cpu_pct'):.0f}",
            f"{med(size, 'bare', 'cpu_pct'):.0f}",
            f"{own_cpu(size):.0f}",
            f"{med(size, 'app', 'rss_mb'):.0f}",
            f"{med(size, 'bare', 'rss_mb'):.0f}",
            f"{med(size, 'app', 'backlog_max'):.0f}",
        ]
        for size in sizes
    ]
    top = max(sizes)
    print_table(
        f"1c. TUI cost: N instances watched, N x {CLIENTS_EACH} requests in flight "
        f"(fake servers, {args.delay:g} s each), one core; TUI + load beside load alone",
        [
            "N",
            "in flight",
            "req/s",
            "lag p50 ms",
            "lag p99 ms",
            "alone",
            "CPU %",
            "alone",
            "TUI's own %",
            "RSS MB",
            "alone",
            "backlog",
        ],
        rows,
        [
            f"target at {top} instances: lag p99 < {TARGET_LAG_MS:.0f} ms (got "
            f"{med(top, 'app', 'lag_p99_ms'):.1f}), TUI's own CPU < {TARGET_CPU:.0f}% of one "
            f"core (got {own_cpu(top):.0f}%)",
            "alone: the same load without the app; TUI's own % is the difference in CPU",
            "backlog: most events waiting for the next frame (the app posts them to the "
            "widgets once per 0.1 s frame, not one by one)",
            BEFORE,
            BEFORE_SCALE,
            BEFORE_THREAD,
            *([f"busy box: {args.hogs} CPU hog(s) per core beside the run"] if args.hogs else []),
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
