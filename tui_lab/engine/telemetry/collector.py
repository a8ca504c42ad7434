"""Live per-process and machine figures for the lab's panel, sampled about once a second.

The panel answers "where did the throughput go?" while a run is going: which instance burns the
CPU, holds the memory, has its slots full. So every figure is read from its source each round
(psutil, NVML, the server's own /metrics and /slots) and one that cannot be read is None with a
reason, never a stale or made-up value. The UI renders these events and computes nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from time import monotonic

import aiohttp
import psutil

from tui_lab.engine.events import (
    EventSink,
    InstanceTelemetry,
    MachineTelemetry,
    ProcessOwner,
    ProcessRole,
)
from tui_lab.engine.load.request_log import RequestLogCounter
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.telemetry.gpu_probe import GpuProbe, gpu_memory_for
from tui_lab.engine.telemetry.process_family import Family, ProcessFamilies
from tui_lab.engine.telemetry.server_poll import (
    POLLS_AT_ONCE,
    SILENT,
    ServerReport,
    TokenRates,
    poll,
)

NOT_ON_GPU_REASON = "process not using the GPU"
NOT_RUNNING_REASON = "process not running"

WatchKey = tuple[ProcessOwner, ProcessRole, int]


@dataclass(frozen=True)
class Watched:
    """One process to watch; `url` is a llama-server's base URL (None for nginx)."""

    role: ProcessRole
    index: int
    pid: int
    url: str | None
    log: Path | None = None  # a llama-server's log, where finished requests are counted
    api_key: str | None = None  # the server's --api-key: its /metrics and /slots need it
    owner: ProcessOwner = "run"  # a run's server 0 and the cluster's server 0 are two processes

    @property
    def key(self) -> WatchKey:
        return (self.owner, self.role, self.index)


class TelemetryCollector:
    """Samples every `interval_s` without blocking the event loop: psutil and NVML run in
    threads, and the servers are polled concurrently (POLLS_AT_ONCE at a time), each with a
    short timeout, so a stuck server delays a round by at most POLL_TIMEOUT_S (up to
    POLLS_AT_ONCE stuck servers, by as much together).

    It closes its GpuProbe (its own or the one given) when run() ends or on close().
    """

    def __init__(
        self, emit: EventSink, interval_s: float = 1.0, gpu: GpuProbe | None = None
    ) -> None:
        self._emit = emit
        self.interval_s = interval_s
        self._gpu = gpu or GpuProbe()
        self._watched: dict[WatchKey, Watched] = {}
        self._families = ProcessFamilies()
        self._rates = TokenRates()
        self._request_logs = RequestLogCounter()
        psutil.cpu_percent(interval=None)  # starts the machine-wide interval for the first round

    def watch(self, item: Watched) -> None:
        """Add or replace; state is tied to the PID, so a restarted process starts afresh."""
        self._watched[item.key] = item

    def unwatch(self, role: ProcessRole, index: int, owner: ProcessOwner = "run") -> None:
        self._watched.pop((owner, role, index), None)
        self._rates.forget((owner, role, index))

    def clear(self) -> None:
        self._watched.clear()
        self._rates.clear()

    def close(self) -> None:
        self._gpu.close()

    async def run(self) -> None:
        try:
            while True:
                started = monotonic()
                await self.sample_once()
                await asyncio.sleep(max(0.0, self.interval_s - (monotonic() - started)))
        finally:
            self.close()

    async def sample_once(self) -> list[InstanceTelemetry | MachineTelemetry]:
        """One round: emits and returns a sample per watched process, then the machine's."""
        now = monotonic()
        items = list(self._watched.values())
        polls = asyncio.Semaphore(POLLS_AT_ONCE)
        async with control_session() as session:
            families, (machine, per_pid, gpu_reason), reports, served = await asyncio.gather(
                asyncio.to_thread(self._families.read, [item.pid for item in items]),
                asyncio.to_thread(self._read_host, now),
                asyncio.gather(*(_report(session, item, polls) for item in items)),
                asyncio.to_thread(self._count_requests, items),
            )
        samples: list[InstanceTelemetry | MachineTelemetry] = []
        for item, family, report, requests in zip(items, families, reports, served, strict=True):
            # Unwatched or replaced during the round: a sample would revive a row the UI dropped.
            if self._watched.get(item.key) != item:
                continue
            samples.append(self._instance(item, now, family, report, per_pid, gpu_reason, requests))
        samples.append(replace(machine, tokens_per_s=self._rates.total(now)))
        for sample in samples:
            self._emit(sample)
        return samples

    def _instance(
        self,
        item: Watched,
        now: float,
        family: Family,
        report: ServerReport | None,
        per_pid: Mapping[int, int],
        gpu_reason: str | None,
        requests_served: int | None,
    ) -> InstanceTelemetry:
        if not family.alive:
            report = None
        server = report or SILENT
        gpu_memory = gpu_memory_for(family.pids, per_pid)
        if gpu_memory is not None:
            gpu_reason = None
        elif not family.alive:
            gpu_reason = NOT_RUNNING_REASON
        else:
            gpu_reason = gpu_reason or NOT_ON_GPU_REASON
        return InstanceTelemetry(
            role=item.role,
            index=item.index,
            pid=item.pid,
            time=now,
            alive=family.alive,
            cpu_percent=family.cpu_percent,
            rss_bytes=family.rss_bytes,
            threads=family.threads,
            gpu_memory_bytes=gpu_memory,
            gpu_reason=gpu_reason,
            slots_busy=server.slots_busy,
            slots_total=server.slots_total,
            requests_processing=server.requests_processing,
            requests_deferred=server.requests_deferred,
            tokens_predicted_total=server.tokens_predicted_total,
            tokens_per_s=self._rates.rate(item.key, item.pid, report, now),
            requests_served=requests_served,
            # nginx has nothing to poll: it answers as long as it runs.
            answering=family.alive and (item.url is None or report is not None),
            owner=item.owner,
            kv_cache_usage=server.kv_cache_usage,
        )

    def _count_requests(self, items: list[Watched]) -> list[int | None]:
        """Runs in a thread: reads only what each server's log gained since the last round."""
        self._request_logs.keep_only({item.log for item in items if item.log is not None})
        return [self._request_logs.count(item.log) if item.log else None for item in items]

    def _read_host(self, now: float) -> tuple[MachineTelemetry, dict[int, int], str | None]:
        """Runs in a thread: the machine's figures and NVML's per-process GPU memory."""
        memory = psutil.virtual_memory()
        gpus, gpu_reason = self._gpu.devices()
        machine = MachineTelemetry(
            time=now,
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_used_bytes=memory.total - memory.available,
            memory_total_bytes=memory.total,
            swap_used_bytes=psutil.swap_memory().used,
            load_1m=_load_1m(),
            gpus=gpus,
            gpu_reason=gpu_reason,
            unified_memory=self._gpu.unified_memory,
        )
        per_pid, per_pid_reason = self._gpu.process_memory()
        return machine, per_pid, per_pid_reason


async def _report(
    session: aiohttp.ClientSession, item: Watched, polls: asyncio.Semaphore
) -> ServerReport | None:
    """A server's report; nginx (no URL) has none to give."""
    return None if item.url is None else await poll(session, item.url, item.api_key, polls)


def _load_1m() -> float | None:
    getloadavg = getattr(os, "getloadavg", None)  # absent on Windows
    if getloadavg is None:
        return None
    try:
        return float(getloadavg()[0])
    except OSError:
        return None
