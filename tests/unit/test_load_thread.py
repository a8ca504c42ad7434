"""The measured load in its own thread, against the in-process fake llama-server: records on
the caller's loop in order and before the result, cancellation that waits for the load's end,
errors that reach the caller as themselves, and a thread that ends with its run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path

import psutil
import pytest

from tests.fake_gpus import no_nvml
from tests.fake_llama_server import FakeLlamaServer
from tests.helpers import fake_cluster
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import CellFinished, Event, RequestDone, RunFinished
from tui_lab.engine.load import load_thread
from tui_lab.engine.load.client import LoadResult, LoadSpec, RequestRecord
from tui_lab.engine.load.load_thread import THREAD_NAME, LoadThread
from tui_lab.engine.plan.config import LabConfig, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, single
from tui_lab.engine.sweeps import runner as sweep
from tui_lab.engine.sweeps.runner import PlanRunner


def load_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.fixture
def thread() -> Iterator[LoadThread]:
    started = LoadThread()
    yield started
    started.close()


def spec(server: FakeLlamaServer, **kw: object) -> LoadSpec:
    fields: dict[str, object] = {"concurrency": 4, "requests": 60, "n_predict": 3}
    fields.update(kw)
    return LoadSpec(url=server.base_url, **fields)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_records_reach_the_callers_loop_in_order_and_all_before_the_result(
    thread: LoadThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches, so several are handed over (by size and by timer) and their order counts."""
    monkeypatch.setattr(load_thread, "BATCH_MAX", 7)
    ran_in: list[str] = []
    real = load_thread.run_load

    async def watched(*args: object) -> LoadResult:
        ran_in.append(threading.current_thread().name)
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(load_thread, "run_load", watched)
    caller = asyncio.get_running_loop()
    seen: list[RequestRecord] = []

    def on_record(record: RequestRecord) -> None:
        assert threading.current_thread() is threading.main_thread()
        assert asyncio.get_running_loop() is caller
        seen.append(record)

    async with FakeLlamaServer() as server:
        result = await thread.run(spec(server), on_record)
        arrived = len(seen)
    assert ran_in == [THREAD_NAME]
    assert arrived == len(result.records) == 60
    # In the order the load finished them (each record is handed on as its request ends).
    assert all(a.end <= b.end for a, b in pairwise(seen))
    assert sorted(r.index for r in seen) == list(range(60))


async def test_cancelling_mid_load_stops_it_and_leaves_no_connection_or_task(
    thread: LoadThread,
) -> None:
    seen: list[RequestRecord] = []
    async with FakeLlamaServer(delay_s=0.02) as server:
        task = asyncio.create_task(thread.run(spec(server, requests=10**6), seen.append))
        await until(lambda: len(seen) >= 8)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sent = len(server.bodies)
        port = int(server.base_url.rsplit(":", 1)[1])
        ours = [
            c
            for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        ]
        assert ours == []
        started = thread._started
        assert started is not None
        assert [t.get_coro().__name__ for t in asyncio.all_tasks(started.loop)] == ["serve"]
        await asyncio.sleep(0.2)
        assert len(server.bodies) == sent
        # The thread goes on serving the run's next cell.
        assert len((await thread.run(spec(server, requests=3))).records) == 3


async def test_cancelling_waits_until_the_load_has_cleaned_up(
    thread: LoadThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, cleaned = threading.Event(), threading.Event()

    async def slow_to_stop(*_: object) -> LoadResult:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.2)  # closing connections, in the load's own loop
            cleaned.set()
        raise AssertionError("not cancelled")

    monkeypatch.setattr(load_thread, "run_load", slow_to_stop)
    task = asyncio.create_task(thread.run(LoadSpec("http://127.0.0.1:9", 1, 1, 1)))
    await until(started.is_set)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_an_error_inside_the_load_reaches_the_caller_as_itself(
    thread: LoadThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = LabError("the load failed")

    async def failing(*_: object) -> LoadResult:
        raise error

    monkeypatch.setattr(load_thread, "run_load", failing)
    with pytest.raises(LabError) as raised:
        await thread.run(LoadSpec("http://127.0.0.1:9", 1, 1, 1))
    assert raised.value is error


async def test_a_failing_record_sink_fails_the_run_rather_than_a_log_line(
    thread: LoadThread,
) -> None:
    def broken(_: RequestRecord) -> None:
        raise OSError("disk full")

    async with FakeLlamaServer() as server:
        with pytest.raises(OSError, match="disk full"):
            await thread.run(spec(server), broken)


async def test_the_thread_starts_with_the_first_load_and_close_ends_it() -> None:
    thread = LoadThread()
    assert load_threads() == []
    async with FakeLlamaServer() as server:
        await thread.run(spec(server, requests=2))
        (running,) = load_threads()
        await thread.run(spec(server, requests=2))
        assert load_threads() == [running]  # one thread for every load
    thread.close()
    assert not running.is_alive() and load_threads() == []


@pytest.mark.parametrize("cancel", [False, True])
async def test_a_runs_end_ends_its_load_thread_after_every_record(
    cancel: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_nvml(monkeypatch)
    monkeypatch.setattr(sweep, "check_plan_ports", lambda *_: None)
    load = LoadSettings(n_predict=2, requests=10**6 if cancel else 40)
    plan = single(load, ServerOptions())
    lab = LabConfig(server_bin=tmp_path / "none", model=tmp_path / "none.gguf", nginx_bin=None)
    events: list[Event] = []
    runner = PlanRunner(plan, lab, load, events.append, tmp_path, None)
    async with FakeLlamaServer(delay_s=0.01) as server:

        async def running_cluster(*_: object) -> object:
            return fake_cluster(server.base_url, lab)

        monkeypatch.setattr(runner, "_cluster_for", running_cluster)
        task = asyncio.create_task(runner.run())
        if cancel:
            await until(lambda: any(isinstance(e, RequestDone) for e in events))
            assert len(load_threads()) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            await task
    assert load_threads() == []
    assert isinstance(events[-1], RunFinished) and events[-1].cancelled == cancel
    if not cancel:
        kinds = [type(e) for e in events]
        assert kinds.count(RequestDone) == 40
        assert kinds.index(CellFinished) > max(i for i, k in enumerate(kinds) if k is RequestDone)
