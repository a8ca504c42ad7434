"""Telemetry against NVML's own error types and structures, real processes and a fake server.

NVML is replaced at pynvml's function level with the objects pynvml itself builds, so the
matching code meets the same shapes a real driver hands it; processes are real children of the
test, so psutil's figures and its errors for a vanished process are real too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pynvml
import pytest
from aiohttp import web

from tests import fake_gpus
from tui_lab.engine.events import InstanceTelemetry, MachineTelemetry
from tui_lab.engine.telemetry import collector as telemetry
from tui_lab.engine.telemetry import gpu_probe, server_poll
from tui_lab.engine.telemetry.collector import TelemetryCollector, Watched
from tui_lab.engine.telemetry.gpu_probe import APPLE_REASON, GpuProbe, gpu_memory_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A parent that starts a sleeping child and prints the child's PID.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)",
]


@pytest.fixture(autouse=True)
def not_apple(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_probe, "APPLE_SILICON", False)


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus.no_nvml(monkeypatch)


def nvml_process(pid: int, used: int | None) -> object:
    """What nvmlDeviceGetComputeRunningProcesses returns: pynvml's friendly object built from
    its process-info struct, usedGpuMemory None where NVML reports "not available"."""
    raw = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value if used is None else used
    info = pynvml.nvmlStructToFriendlyObject(pynvml.c_nvmlProcessInfo_t(pid=pid, usedGpuMemory=raw))
    if info.usedGpuMemory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
        info.usedGpuMemory = None
    return info


Listing = dict[int, list[object] | pynvml.NVMLError]


def fake_nvml(monkeypatch: pytest.MonkeyPatch, compute: Listing, graphics: Listing) -> None:
    """NVML with one device per key of `compute`; a listing may be an error to raise."""

    def listing(table: Listing) -> Callable[[int], list[object]]:
        def read(handle: int) -> list[object]:
            result = table.get(handle, [])
            if isinstance(result, pynvml.NVMLError):
                raise result
            return result

        return read

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(compute))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", listing(compute))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetGraphicsRunningProcesses", listing(graphics))


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (pynvml.NVMLError_LibraryNotFound(), "library not found"),
        (pynvml.NVMLError_DriverNotLoaded(), "driver not loaded"),
        (pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION), "no permission"),
    ],
)
def test_probe_without_nvml_gives_reasons_not_exceptions(
    monkeypatch: pytest.MonkeyPatch, error: pynvml.NVMLError, words: str
) -> None:
    def fail() -> None:
        raise error

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    probe = GpuProbe()
    gpus, reason = probe.devices()
    per_pid, pid_reason = probe.process_memory()
    probe.close()
    assert gpus == () and reason is not None and words in reason
    assert per_pid == {} and pid_reason == reason


def test_probe_on_apple_silicon_says_unified_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_probe, "APPLE_SILICON", True)
    probe = GpuProbe()
    assert probe.devices() == ((), APPLE_REASON)
    assert probe.process_memory() == ({}, APPLE_REASON)


def test_process_memory_sums_devices_and_lists_per_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    server, worker, stranger, unknown = 1001, 1002, 4242, 1003
    fake_nvml(
        monkeypatch,
        compute={
            0: [
                nvml_process(server, 300),
                nvml_process(stranger, 999),
                nvml_process(unknown, None),
            ],
            1: [nvml_process(server, 200), nvml_process(worker, 50)],
        },
        # A compute+graphics process is in both lists with the same figure: counted once.
        graphics={1: [nvml_process(worker, 50)]},
    )
    probe = GpuProbe()
    per_pid, reason = probe.process_memory()
    probe.close()
    assert reason is None
    assert per_pid == {server: 500, worker: 50, stranger: 999}
    assert gpu_memory_for([server, worker], per_pid) == 550
    assert gpu_memory_for([unknown], per_pid) is None
    assert gpu_memory_for([7, 8], per_pid) is None


def test_one_device_refusing_process_lists_keeps_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_nvml(
        monkeypatch,
        compute={0: pynvml.NVMLError_NotSupported(), 1: [nvml_process(1001, 64)]},
        graphics={0: pynvml.NVMLError_NotSupported()},
    )
    probe = GpuProbe()
    assert probe.process_memory() == ({1001: 64}, None)
    probe.close()


def test_no_device_answering_gives_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = pynvml.NVMLError_NotSupported()
    fake_nvml(monkeypatch, compute={0: refused}, graphics={0: refused})
    probe = GpuProbe()
    per_pid, reason = probe.process_memory()
    probe.close()
    assert per_pid == {} and reason is not None and "not supported" in reason


class FakeMetricsServer:
    """/metrics and /slots as llama-server serves them, with the figures and failures set by
    the test. `tokens` is the finished-request counter; `slots` holds None for an idle slot or
    the tokens a busy one has generated so far; `mode` is "ok", "error" (500) or "stall"."""

    def __init__(self) -> None:
        self.tokens = 0
        self.slots: list[int | None] = [None, None]
        self.mode = "ok"
        self.kv_usage: float | None = None  # exported only when set, as older builds do
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/slots", self._slots)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _answer(self, response: web.Response) -> web.Response:
        if self.mode == "stall":
            await asyncio.sleep(30)
        if self.mode == "error":
            return web.Response(status=500)
        return response

    async def _metrics(self, _: web.Request) -> web.Response:
        busy = sum(slot is not None for slot in self.slots)
        text = (
            "# HELP llamacpp:tokens_predicted_total Number of generation tokens processed\n"
            "# TYPE llamacpp:tokens_predicted_total counter\n"
            f"llamacpp:tokens_predicted_total {self.tokens}\n"
            "# HELP llamacpp:requests_processing Number of requests processing\n"
            "# TYPE llamacpp:requests_processing gauge\n"
            f"llamacpp:requests_processing {busy}\n"
            "# HELP llamacpp:requests_deferred Number of requests deferred\n"
            "# TYPE llamacpp:requests_deferred gauge\n"
            "llamacpp:requests_deferred 3\n"
        )
        if self.kv_usage is not None:
            text += f"llamacpp:kv_cache_usage_ratio {self.kv_usage}\n"
        return await self._answer(web.Response(text=text))

    async def _slots(self, _: web.Request) -> web.Response:
        slots: list[dict[str, object]] = []
        for i, decoded in enumerate(self.slots):
            slot: dict[str, object] = {"id": i, "n_ctx": 256, "is_processing": decoded is not None}
            if decoded is not None:
                slot["next_token"] = [{"has_next_token": True, "n_remain": 9, "n_decoded": decoded}]
            slots.append(slot)
        return await self._answer(web.json_response(slots))


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeMetricsServer]:
    server = FakeMetricsServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The collector's clock, moved by hand so rates are exact."""
    now = [1000.0]
    for module in (telemetry, server_poll):
        monkeypatch.setattr(module, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(SLEEPER)
    yield proc
    proc.kill()
    proc.wait()


def instance(samples: list[object]) -> InstanceTelemetry:
    (sample,) = [s for s in samples if isinstance(s, InstanceTelemetry)]
    return sample


@pytest.mark.usefixtures("no_nvml")
async def test_server_figures_and_tokens_per_s_from_two_samples(
    fake_server: FakeMetricsServer, clock: list[float], sleeper: subprocess.Popen[bytes]
) -> None:
    events: list[object] = []
    collector = TelemetryCollector(events.append)
    collector.watch(Watched("server", 0, sleeper.pid, fake_server.url))
    fake_server.tokens = 100
    first = instance(await collector.sample_once())
    fake_server.tokens = 150
    fake_server.slots = [0, None]  # a request just started: nothing generated yet
    fake_server.kv_usage = 0.25
    clock[0] += 2.0
    second = instance(await collector.sample_once())
    collector.close()

    assert first.answering and first.tokens_predicted_total == 100
    assert first.tokens_per_s is None  # no previous sample
    assert first.cpu_percent is None  # psutil has no interval yet
    assert second.tokens_per_s == pytest.approx(25.0)
    assert (second.slots_busy, second.slots_total) == (1, 2)
    assert (second.requests_processing, second.requests_deferred) == (1, 3)
    assert (first.kv_cache_usage, second.kv_cache_usage) == (None, 0.25)
    assert second.alive and second.cpu_percent is not None
    assert second.rss_bytes is not None and second.rss_bytes > 1_000_000
    assert second.threads is not None and second.threads >= 1
    assert second.gpu_memory_bytes is None
    assert second.gpu_reason is not None and "library not found" in second.gpu_reason
    machine = events[-1]
    assert isinstance(machine, MachineTelemetry) and events[-2] == second
    assert 0 < machine.memory_used_bytes < machine.memory_total_bytes
    assert machine.gpus == () and machine.gpu_reason == second.gpu_reason
    assert not machine.unified_memory


@pytest.mark.usefixtures("no_nvml")
async def test_many_servers_are_polled_a_few_at_a_time(
    monkeypatch: pytest.MonkeyPatch, sleeper: subprocess.Popen[bytes]
) -> None:
    """64 servers polled at once made one long burst of callbacks that stalled the loop."""
    live = peak = 0

    async def scrape(*_: object) -> dict[str, float]:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        await asyncio.sleep(0.01)
        live -= 1
        return {"llamacpp:tokens_predicted_total": 1.0}

    async def slots(*_: object) -> list[dict[str, object]]:
        return [{"id": 0, "is_processing": False}]

    monkeypatch.setattr(server_poll, "scrape", scrape)
    monkeypatch.setattr(server_poll, "_slots", slots)
    collector = TelemetryCollector(lambda _: None)
    for i in range(3 * server_poll.POLLS_AT_ONCE):
        collector.watch(Watched("server", i, sleeper.pid, f"http://127.0.0.1:{9000 + i}"))
    samples = [s for s in await collector.sample_once() if isinstance(s, InstanceTelemetry)]
    collector.close()
    assert peak == server_poll.POLLS_AT_ONCE
    assert len(samples) == 3 * server_poll.POLLS_AT_ONCE and all(s.answering for s in samples)


@pytest.mark.usefixtures("no_nvml")
async def test_rate_counts_tokens_of_requests_still_generating(
    fake_server: FakeMetricsServer, clock: list[float], sleeper: subprocess.Popen[bytes]
) -> None:
    """llama-server's counter moves only when a request finishes; the rate must not read 0
    for the whole of a long generation."""
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("server", 0, sleeper.pid, fake_server.url))
    fake_server.slots = [10, None]
    await collector.sample_once()
    fake_server.slots = [40, 5]
    clock[0] += 1.0
    running = instance(await collector.sample_once())
    fake_server.tokens = 64  # the first request finished with 64 tokens
    fake_server.slots = [None, 25]
    clock[0] += 1.0
    finished = instance(await collector.sample_once())
    assert running.tokens_predicted_total == 0 and running.tokens_per_s == pytest.approx(35.0)
    assert finished.tokens_predicted_total == 64 and finished.tokens_per_s == pytest.approx(44.0)


@pytest.mark.usefixtures("no_nvml")
async def test_counter_going_backwards_or_new_pid_gives_no_rate(
    fake_server: FakeMetricsServer, clock: list[float], sleeper: subprocess.Popen[bytes]
) -> None:
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("server", 0, sleeper.pid, fake_server.url))
    fake_server.tokens = 500
    await collector.sample_once()
    fake_server.tokens = 20  # the server restarted
    clock[0] += 1.0
    assert instance(await collector.sample_once()).tokens_per_s is None
    fake_server.tokens = 40
    collector.watch(Watched("server", 0, os.getpid(), fake_server.url))  # a new process
    clock[0] += 1.0
    assert instance(await collector.sample_once()).tokens_per_s is None
    fake_server.tokens = 50
    clock[0] += 1.0
    assert instance(await collector.sample_once()).tokens_per_s == pytest.approx(10.0)


@pytest.mark.usefixtures("no_nvml")
@pytest.mark.parametrize("failure", ["error", "stall", "down"])
async def test_server_not_answering_shows_no_stale_figures(
    fake_server: FakeMetricsServer,
    monkeypatch: pytest.MonkeyPatch,
    sleeper: subprocess.Popen[bytes],
    failure: str,
) -> None:
    monkeypatch.setattr(server_poll, "POLL_TIMEOUT_S", 0.2)
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("server", 0, sleeper.pid, fake_server.url))
    fake_server.tokens = 100
    assert instance(await collector.sample_once()).answering
    if failure == "down":
        await fake_server.stop()
    else:
        fake_server.mode = failure
    sample = instance(await asyncio.wait_for(collector.sample_once(), 5))
    assert sample.alive and sample.rss_bytes is not None  # the process still runs
    assert not sample.answering
    assert sample.slots_busy is None and sample.slots_total is None
    assert sample.tokens_predicted_total is None and sample.tokens_per_s is None
    assert sample.requests_processing is None and sample.requests_deferred is None


@pytest.mark.usefixtures("no_nvml")
async def test_process_that_exits_between_samples_is_not_alive(
    sleeper: subprocess.Popen[bytes],
) -> None:
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("nginx", 0, sleeper.pid, None))
    first = instance(await collector.sample_once())
    assert first.alive and first.answering and first.rss_bytes is not None
    sleeper.kill()
    sleeper.wait()
    gone = instance(await collector.sample_once())
    assert not gone.alive and not gone.answering
    assert (gone.cpu_percent, gone.rss_bytes, gone.threads, gone.gpu_memory_bytes) == (
        None,
        None,
        None,
        None,
    )
    assert gone.gpu_reason == telemetry.NOT_RUNNING_REASON


async def test_children_count_towards_memory_and_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    with subprocess.Popen(PARENT, stdout=subprocess.PIPE, start_new_session=True) as parent:
        try:
            assert parent.stdout is not None
            child_pid = int(parent.stdout.readline())
            fake_nvml(
                monkeypatch,
                compute={0: [nvml_process(child_pid, 128 << 20), nvml_process(4242, 1 << 30)]},
                graphics={},
            )
            collector = TelemetryCollector(lambda _: None)
            collector.watch(Watched("nginx", 0, parent.pid, None))
            sample = instance(await collector.sample_once())
            alone = TelemetryCollector(lambda _: None)
            alone.watch(Watched("nginx", 0, child_pid, None))
            child_only = instance(await alone.sample_once())
            collector.close()
        finally:
            os.killpg(parent.pid, signal.SIGKILL)  # the child too: it is in the same session
    assert sample.gpu_memory_bytes == 128 << 20 and sample.gpu_reason is None
    assert sample.rss_bytes is not None and child_only.rss_bytes is not None
    assert sample.rss_bytes > child_only.rss_bytes
    assert sample.threads is not None and sample.threads >= 2


async def test_process_off_the_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml(monkeypatch, compute={0: [nvml_process(4242, 1 << 30)]}, graphics={})
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("server", 0, os.getpid(), None))
    sample = instance(await collector.sample_once())
    assert sample.gpu_memory_bytes is None
    assert sample.gpu_reason == telemetry.NOT_ON_GPU_REASON


async def test_apple_silicon_marks_unified_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_probe, "APPLE_SILICON", True)
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("server", 0, os.getpid(), None))
    sample, machine = await collector.sample_once()
    assert isinstance(sample, InstanceTelemetry) and isinstance(machine, MachineTelemetry)
    assert sample.gpu_reason == APPLE_REASON and machine.gpu_reason == APPLE_REASON
    assert machine.unified_memory


@pytest.mark.usefixtures("no_nvml")
async def test_unwatched_processes_are_no_longer_sampled(
    sleeper: subprocess.Popen[bytes],
) -> None:
    collector = TelemetryCollector(lambda _: None)
    collector.watch(Watched("server", 0, sleeper.pid, None))
    collector.watch(Watched("server", 1, os.getpid(), None))
    collector.unwatch("server", 0)
    samples = await collector.sample_once()
    assert [(s.role, s.index) for s in samples if isinstance(s, InstanceTelemetry)] == [
        ("server", 1)
    ]
    collector.clear()
    assert [type(s) for s in await collector.sample_once()] == [MachineTelemetry]


async def test_run_samples_until_cancelled_then_closes_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_nvml(monkeypatch, compute={}, graphics={})
    shutdowns: list[bool] = []
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: shutdowns.append(True))
    events: list[Any] = []
    collector = TelemetryCollector(events.append, interval_s=0.05)
    task = asyncio.create_task(collector.run())
    while len(events) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shutdowns == [True]
    assert all(isinstance(e, MachineTelemetry) for e in events)
