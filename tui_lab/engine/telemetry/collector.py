"""Live per-process and machine figures for the lab's panel, sampled about once a second.

The panel answers "where did the throughput go?" while a run is going: which instance burns the
CPU, holds the memory, has its slots full. So every figure is read from its source each round
(psutil, NVML, the server's own /metrics and /slots) and one that cannot be read is None with a
reason, never a stale or made-up value. The UI renders these events and computes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import platform
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import NamedTuple

import aiohttp
import orjson
import psutil
import pynvml

from tui_lab.engine.events import ProcessRole
from tui_lab.engine.load.request_log import RequestLogCounter
from tui_lab.engine.load.server_metrics import TOKENS_PREDICTED, auth_headers, scrape
from tui_lab.engine.processes.instance import control_session

POLL_TIMEOUT_S = 1.0  # a server slower than this to report is shown as not answering
# Servers polled at once. All 64 of a GPU box at once made ~128 connections ready together,
# and asyncio runs every ready callback before it looks at a timer again: a ~40 ms stall of
# the loop the TUI and the load share, once a second. A few at a time keep each burst short.
POLLS_AT_ONCE = 8

APPLE_SILICON = sys.platform == "darwin" and platform.machine() == "arm64"
APPLE_REASON = "Apple Silicon: unified memory, counted in RSS and system memory"
NO_GPU_REASON = "no NVIDIA GPU: NVML found none"
NOT_ON_GPU_REASON = "process not using the GPU"
NOT_RUNNING_REASON = "process not running"
CLOSED_REASON = "GPU probe closed"
APPLE_ENERGY_REASON = "Apple Silicon: no NVIDIA GPU, so no NVML energy counter"

# NVML's own messages ("NVML Shared Library Not Found") read like a crash on a box that simply
# has no NVIDIA GPU, and the panel has one short line for the reason.
_NVML_REASONS: dict[type[pynvml.NVMLError], str] = {
    pynvml.NVMLError_LibraryNotFound: "no NVIDIA GPU: NVML library not found",
    pynvml.NVMLError_DriverNotLoaded: "no NVIDIA GPU: driver not loaded",
    pynvml.NVMLError_NoPermission: "NVML: no permission to read the GPU",
    pynvml.NVMLError_NotSupported: "NVML: not supported by this GPU or driver",
}
# pynvml raises NVMLLibraryMismatchError (not an NVMLError) when the driver lacks a versioned call.
_NVML_ERRORS = (pynvml.NVMLError, pynvml.NVMLLibraryMismatchError)
# ZombieProcess is a NoSuchProcess: a process that has exited but is not yet reaped is gone.
_PROCESS_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)


@dataclass(frozen=True)
class Watched:
    """One process to watch; `url` is a llama-server's base URL (None for nginx)."""

    role: ProcessRole
    index: int
    pid: int
    url: str | None
    log: Path | None = None  # a llama-server's log, where finished requests are counted
    api_key: str | None = None  # the server's --api-key: its /metrics and /slots need it


@dataclass(frozen=True)
class InstanceTelemetry:
    """One sample of one process and its children, emitted as an engine event."""

    role: ProcessRole
    index: int
    pid: int
    time: float  # time.monotonic() at the start of the round
    alive: bool
    cpu_percent: float | None  # 100 = one core; None on a process's first sample (no interval)
    rss_bytes: int | None
    threads: int | None
    gpu_memory_bytes: int | None
    gpu_reason: str | None  # why gpu_memory_bytes is None
    slots_busy: int | None
    slots_total: int | None
    requests_processing: int | None
    requests_deferred: int | None
    tokens_predicted_total: int | None  # the server's counter: finished requests only
    tokens_per_s: float | None  # live: also counts tokens of requests still generating
    requests_served: int | None  # finished requests, from the server's log
    answering: bool  # False: the process is gone or its server did not report this round


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class MachineTelemetry:
    """One sample of the whole box, emitted after the round's instance samples."""

    time: float
    cpu_percent: float  # of all cores: 100 = every core busy
    memory_used_bytes: int  # total - available: what no longer fits a new model
    memory_total_bytes: int
    swap_used_bytes: int
    load_1m: float | None
    gpus: tuple[GpuSample, ...]
    gpu_reason: str | None
    unified_memory: bool  # GPU memory is system memory (Apple Silicon)


@dataclass(frozen=True)
class EnergyReading:
    """NVML's total-energy counters of some GPUs: millijoules since the driver loaded, by NVML
    index. `reason` says why a GPU asked for is missing from `millijoules` (the first such GPU),
    so a sum over part of the GPUs is never taken for the whole."""

    millijoules: Mapping[int, int]
    reason: str | None


class GpuProbe:
    """NVML, initialised once and never raising to callers: every failure becomes a reason.

    A lock serialises NVML calls with close(), so shutting down while a sampling thread is
    mid-read waits for that read instead of pulling NVML out from under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None  # why NVML cannot be used; None while it is up
        if APPLE_SILICON:
            self._reason = APPLE_REASON
            return
        try:
            pynvml.nvmlInit()
        except _NVML_ERRORS as error:
            self._reason = _nvml_reason(error)

    def devices(self) -> tuple[tuple[GpuSample, ...], str | None]:
        with self._lock:
            if self._reason is not None:
                return (), self._reason
            try:
                handles = _handles()
            except _NVML_ERRORS as error:
                return (), _nvml_reason(error)
            samples: list[GpuSample] = []
            failure: str | None = None
            for index, handle in enumerate(handles):
                try:
                    samples.append(_device_sample(index, handle))
                except _NVML_ERRORS as error:
                    failure = failure or _nvml_reason(error)
            if samples:
                return tuple(samples), None
            return (), failure or NO_GPU_REASON

    def process_memory(self) -> tuple[dict[int, int], str | None]:
        """PID -> bytes of GPU memory over all devices; a reason only when nothing was readable,
        so one device refusing per-process figures does not hide the others'."""
        with self._lock:
            if self._reason is not None:
                return {}, self._reason
            try:
                handles = _handles()
            except _NVML_ERRORS as error:
                return {}, _nvml_reason(error)
            if not handles:
                return {}, NO_GPU_REASON
            totals: dict[int, int] = {}
            failure: str | None = None
            read_any = False
            for handle in handles:
                device: dict[int, int] = {}
                for listing in (
                    pynvml.nvmlDeviceGetComputeRunningProcesses,
                    pynvml.nvmlDeviceGetGraphicsRunningProcesses,
                ):
                    try:
                        used = _listed_memory(listing(handle))
                    except _NVML_ERRORS as error:
                        failure = failure or _nvml_reason(error)
                        continue
                    read_any = True
                    # A process doing compute and graphics is in both lists with the same
                    # figure (nvidia-smi shows it once, as "C+G"): count it once.
                    for pid, size in used.items():
                        device[pid] = max(device.get(pid, 0), size)
                for pid, size in device.items():
                    totals[pid] = totals.get(pid, 0) + size
            return totals, None if read_any else failure

    def energy(self, indices: Collection[int] | None = None) -> EnergyReading:
        """The total-energy counter of each GPU in `indices` (None: every GPU NVML sees).

        The counter is the board's, not a process's: whatever else runs on the GPU counts too.
        Boards before Volta have none (NVML answers NotSupported)."""
        with self._lock:
            if self._reason is not None:
                reason = APPLE_ENERGY_REASON if self._reason == APPLE_REASON else self._reason
                return EnergyReading({}, reason)
            try:
                wanted = range(pynvml.nvmlDeviceGetCount()) if indices is None else indices
            except _NVML_ERRORS as error:
                return EnergyReading({}, _nvml_reason(error))
            if not wanted:
                return EnergyReading({}, NO_GPU_REASON)
            millijoules: dict[int, int] = {}
            failure: str | None = None
            for index in wanted:
                try:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                    millijoules[index] = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
                except pynvml.NVMLError_NotSupported:
                    failure = failure or f"GPU{index}: no energy counter (boards before Volta)"
                except _NVML_ERRORS as error:
                    failure = failure or f"GPU{index}: {_nvml_reason(error)}"
            return EnergyReading(millijoules, failure)

    def close(self) -> None:
        with self._lock:
            if self._reason is None:
                with contextlib.suppress(*_NVML_ERRORS):
                    pynvml.nvmlShutdown()
                self._reason = CLOSED_REASON


# One probe for the whole process, initialised on first use and never closed: the configure screen
# sizes a layout on every keystroke, placement asks which GPUs exist and the sweep reads energy
# around every cell, and NVML counts its initialisations, so a collector closing its own probe
# does not end this one.
shared_gpu_probe = functools.cache(GpuProbe)


def _nvml_reason(error: Exception) -> str:
    return _NVML_REASONS.get(type(error), f"NVML error: {error}")


def _handles() -> list[object]:
    return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]


def _device_sample(index: int, handle: object) -> GpuSample:
    """Name and memory are required; the rest is missing on some boards and drivers."""
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuSample(
        index=index,
        name=pynvml.nvmlDeviceGetName(handle),
        utilization_percent=_optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        temperature_c=_optional(
            lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        ),
        power_w=_optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),  # from mW
    )


def _optional(read: Callable[[], float]) -> float | None:
    try:
        return float(read())
    except _NVML_ERRORS:
        return None


def _listed_memory(processes: Iterable[object]) -> dict[int, int]:
    used: dict[int, int] = {}
    for proc in processes:
        size = proc.usedGpuMemory  # type: ignore[attr-defined]
        if size is not None:  # None: NVML cannot tell (Windows WDDM), so it adds nothing
            used[proc.pid] = used.get(proc.pid, 0) + int(size)  # type: ignore[attr-defined]
    return used


def gpu_memory_for(pids: Iterable[int], per_pid: Mapping[int, int]) -> int | None:
    """GPU memory of a process and its children (nginx's workers, a server's helpers); None
    when none of them holds any, so "not on the GPU" is never shown as 0 bytes."""
    sizes = [per_pid[pid] for pid in pids if pid in per_pid]
    return sum(sizes) if sizes else None


@dataclass(frozen=True)
class _Family:
    """psutil's figures for a process plus all its descendants."""

    alive: bool
    pids: tuple[int, ...] = ()
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    threads: int | None = None


_GONE = _Family(alive=False)


@dataclass(frozen=True)
class _ServerReport:
    time: float  # when the server answered, so a slow poll does not skew the rate
    slots_busy: int | None
    slots_total: int | None
    requests_processing: int | None
    requests_deferred: int | None
    tokens_predicted_total: int | None
    tokens_in_flight: int = 0  # generated so far by requests not yet finished


_SILENT = _ServerReport(0.0, None, None, None, None, None)


@dataclass(frozen=True)
class _Counter:
    pid: int
    time: float
    tokens: int


class TelemetryCollector:
    """Samples every `interval_s` without blocking the event loop: psutil and NVML run in
    threads, and the servers are polled concurrently (POLLS_AT_ONCE at a time), each with a
    short timeout, so a stuck server delays a round by at most POLL_TIMEOUT_S (up to
    POLLS_AT_ONCE stuck servers, by as much together).

    It closes its GpuProbe (its own or the one given) when run() ends or on close().
    """

    def __init__(
        self, emit: Callable[[object], None], interval_s: float = 1.0, gpu: GpuProbe | None = None
    ) -> None:
        self._emit = emit
        self.interval_s = interval_s
        self._gpu = gpu or GpuProbe()
        self._watched: dict[tuple[str, int], Watched] = {}
        # psutil's cpu_percent measures since its previous call on the same Process object, so
        # the objects live across rounds; keyed by PID, so a replaced process starts afresh.
        self._processes: dict[int, psutil.Process] = {}
        self._counters: dict[tuple[str, int], _Counter] = {}
        self._request_logs = RequestLogCounter()
        psutil.cpu_percent(interval=None)  # starts the machine-wide interval for the first round

    def watch(self, item: Watched) -> None:
        """Add or replace; state is tied to the PID, so a restarted process starts afresh."""
        self._watched[(item.role, item.index)] = item

    def unwatch(self, role: str, index: int) -> None:
        self._watched.pop((role, index), None)
        self._counters.pop((role, index), None)

    def clear(self) -> None:
        self._watched.clear()
        self._counters.clear()

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

    async def sample_once(self) -> list[object]:
        """One round: emits and returns a sample per watched process, then the machine's."""
        now = monotonic()
        items = list(self._watched.values())
        polls = asyncio.Semaphore(POLLS_AT_ONCE)
        async with control_session() as session:
            families, (machine, per_pid, gpu_reason), reports, served = await asyncio.gather(
                asyncio.to_thread(self._read_families, [item.pid for item in items]),
                asyncio.to_thread(self._read_host, now),
                asyncio.gather(*(_poll(session, item, polls) for item in items)),
                asyncio.to_thread(self._count_requests, items),
            )
        samples: list[object] = []
        for item, family, report, requests in zip(items, families, reports, served, strict=True):
            # Unwatched or replaced during the round: a sample would revive a row the UI dropped.
            if self._watched.get((item.role, item.index)) != item:
                continue
            samples.append(self._instance(item, now, family, report, per_pid, gpu_reason, requests))
        samples.append(machine)
        for sample in samples:
            self._emit(sample)
        return samples

    def _instance(
        self,
        item: Watched,
        now: float,
        family: _Family,
        report: _ServerReport | None,
        per_pid: Mapping[int, int],
        gpu_reason: str | None,
        requests_served: int | None,
    ) -> InstanceTelemetry:
        if not family.alive:
            report = None
        server = report or _SILENT
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
            tokens_per_s=self._rate(item, report),
            requests_served=requests_served,
            # nginx has nothing to poll: it answers as long as it runs.
            answering=family.alive and (item.url is None or report is not None),
        )

    def _rate(self, item: Watched, report: _ServerReport | None) -> float | None:
        """Tokens/s since this process's last report.

        llama-server adds a request's tokens to its counter only when the request finishes, so
        the counter alone reads 0 tok/s for the whole of a long generation and then a spike;
        the slots' running counts make the rate live. A round without a report keeps the old
        count, so the next rate spans the gap instead of starting over.
        """
        if report is None or report.tokens_predicted_total is None:
            return None
        key = (item.role, item.index)
        previous = self._counters.get(key)
        tokens = report.tokens_predicted_total + report.tokens_in_flight
        self._counters[key] = _Counter(item.pid, report.time, tokens)
        if (
            previous is None
            or previous.pid != item.pid
            # The server restarted; or, rarely, a request finished between the two polls and
            # was counted twice last round (in its slot and in the counter).
            or tokens < previous.tokens
            or report.time <= previous.time
        ):
            return None
        return (tokens - previous.tokens) / (report.time - previous.time)

    def _count_requests(self, items: list[Watched]) -> list[int | None]:
        """Runs in a thread: reads only what each server's log gained since the last round."""
        self._request_logs.keep_only({item.log for item in items if item.log is not None})
        return [self._request_logs.count(item.log) if item.log else None for item in items]

    def _read_families(self, pids: list[int]) -> list[_Family]:
        """Runs in a thread. Keeps the Process objects of this round's PIDs only."""
        kept: dict[int, psutil.Process] = {}
        # One pass over the process table per round, not one per watched process as
        # Process.children() would: with 16 servers that pass was most of a round's cost.
        children = _children_by_parent() if pids else {}
        families = [self._read_family(pid, kept, children) for pid in pids]
        self._processes = kept
        return families

    def _read_family(
        self, pid: int, kept: dict[int, psutil.Process], children: Mapping[int, list[int]]
    ) -> _Family:
        """A child seen for the first time adds 0 % CPU this round (psutil has no interval for
        it yet); the parent's first round has no CPU figure at all."""
        try:
            main, fresh = self._process(pid, kept)
            if main.status() == psutil.STATUS_ZOMBIE:
                return _GONE
            readings = [_read(main)]
        except _PROCESS_GONE:
            return _GONE
        for child in _descendants(pid, children):
            # A worker exiting mid-read is simply not counted; the parent's figures still hold.
            with contextlib.suppress(*_PROCESS_GONE):
                readings.append(_read(self._process(child, kept)[0]))
        return _Family(
            alive=True,
            pids=tuple(r.pid for r in readings),
            cpu_percent=None if fresh else sum(r.cpu_percent for r in readings),
            rss_bytes=sum(r.rss_bytes for r in readings),
            threads=sum(r.threads for r in readings),
        )

    def _process(self, pid: int, kept: dict[int, psutil.Process]) -> tuple[psutil.Process, bool]:
        """The Process object from earlier rounds, or a new one (fresh: no CPU interval yet)."""
        proc = self._processes.get(pid)
        fresh = proc is None or not proc.is_running()  # is_running() also detects PID reuse
        if fresh:
            proc = psutil.Process(pid)
        kept[pid] = proc
        return proc, fresh

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
            unified_memory=APPLE_SILICON,
        )
        per_pid, per_pid_reason = self._gpu.process_memory()
        return machine, per_pid, per_pid_reason


def _children_by_parent() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info["ppid"]
        if ppid is not None:
            out.setdefault(ppid, []).append(proc.pid)
    return out


def _descendants(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    found: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, ()))
    return found


class _Reading(NamedTuple):
    pid: int
    cpu_percent: float
    rss_bytes: int
    threads: int


def _read(proc: psutil.Process) -> _Reading:
    with proc.oneshot():  # one pass over the process's status files instead of one per figure
        return _Reading(
            proc.pid, proc.cpu_percent(interval=None), proc.memory_info().rss, proc.num_threads()
        )


def _load_1m() -> float | None:
    getloadavg = getattr(os, "getloadavg", None)  # absent on Windows
    if getloadavg is None:
        return None
    try:
        return getloadavg()[0]
    except OSError:
        return None


async def _poll(
    session: aiohttp.ClientSession, item: Watched, polls: asyncio.Semaphore
) -> _ServerReport | None:
    """/metrics and /slots, or None if either fails or is late. Asked at once, so the server
    usually answers both between the same two decode steps and the token counts agree. The
    timeout starts once `polls` lets this server's turn come, not while it waits for it."""
    url, api_key = item.url, item.api_key
    if url is None:
        return None
    try:
        async with polls, asyncio.timeout(POLL_TIMEOUT_S):
            metrics, slots = await asyncio.gather(
                scrape(session, url, api_key), _slots(session, url, api_key)
            )
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return _ServerReport(
        time=monotonic(),
        slots_busy=sum(1 for slot in slots if slot.get("is_processing")),
        slots_total=len(slots),
        requests_processing=_count(metrics, "llamacpp:requests_processing"),
        requests_deferred=_count(metrics, "llamacpp:requests_deferred"),
        tokens_predicted_total=_count(metrics, TOKENS_PREDICTED),
        tokens_in_flight=sum(_decoded(slot) for slot in slots if slot.get("is_processing")),
    )


async def _slots(
    session: aiohttp.ClientSession, url: str, api_key: str | None
) -> list[dict[str, object]]:
    async with session.get(f"{url}/slots", headers=auth_headers(api_key)) as resp:
        resp.raise_for_status()
        # orjson, not the json module: with 64 slots a server /slots is ~20 KB a poll, 90 us
        # to parse against 220 us.
        slots = orjson.loads(await resp.read())
    if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
        raise ValueError("/slots did not answer a list of slots")
    return slots


def _decoded(slot: Mapping[str, object]) -> int:
    """Tokens a busy slot has generated so far (`next_token` is a list in current builds, an
    object in older ones; a build without it leaves the rate to the finished-request counter)."""
    entries = slot.get("next_token")
    if not isinstance(entries, list):
        entries = [entries]
    return sum(int(e.get("n_decoded", 0)) for e in entries if isinstance(e, dict))


def _count(metrics: Mapping[str, float], name: str) -> int | None:
    value = metrics.get(name)
    return None if value is None else int(value)
