"""The one adapter from engine events to Textual: a batch per frame, the collector told what to
watch by owner, role and index, and what a person must be told at once."""

from __future__ import annotations

from pathlib import Path

from textual.message import Message

from tui_lab.bridge import EventBridge, notification
from tui_lab.engine.events import (
    Event,
    InstanceHung,
    Notice,
    ProcessOwner,
    ProcessState,
    RequestsDone,
)
from tui_lab.engine.telemetry.collector import TelemetryCollector, Watched
from tui_lab.messages import EngineEvents


class Target:
    """Stands in for the dashboard: keeps what is posted to it."""

    def __init__(self) -> None:
        self.posted: list[Message] = []

    def post_message(self, message: Message) -> bool:
        self.posted.append(message)
        return True


class Collector:
    """Stands in for the collector: what it was told to watch."""

    def __init__(self) -> None:
        self.watched: dict[tuple[str, str, int], Watched] = {}

    def watch(self, item: Watched) -> None:
        self.watched[item.key] = item

    def unwatch(self, role: str, index: int, owner: str = "run") -> None:
        self.watched.pop((owner, role, index), None)


def keys(owner: ProcessOwner) -> str | None:
    return {"run": "run-key", "cluster": "cluster-key"}[owner]


def bridge() -> tuple[EventBridge, Target, Collector]:
    target, collector = Target(), Collector()
    made = EventBridge(target, collector, keys)  # type: ignore[arg-type]
    return made, target, collector


def server(index: int, pid: int, owner: ProcessOwner, port: int, **kw: object) -> ProcessState:
    return ProcessState(
        "server",
        index,
        port,
        pid,
        "ready",
        log_path=Path(f"/logs/{owner}-{index}.log"),
        owner=owner,
        url=f"http://10.0.0.5:{port}",
        **kw,  # type: ignore[arg-type]
    )


def test_events_wait_for_the_frame_and_go_as_one_message_in_order() -> None:
    made, target, _ = bridge()
    events: list[Event] = [RequestsDone(1, 3, 0), Notice("info", "hello"), RequestsDone(1, 1, 1)]
    for event in events:
        made.emit(event)
    assert target.posted == [] and made.waiting == 3
    made.flush()
    (message,) = target.posted
    assert isinstance(message, EngineEvents) and message.events == tuple(events)
    made.flush()  # nothing new: nothing posted
    assert len(target.posted) == 1 and made.waiting == 0


def test_a_runs_server_0_and_the_clusters_server_0_are_watched_apart() -> None:
    made, _, collector = bridge()
    made.emit(server(0, 100, "run", 8100))
    made.emit(server(0, 200, "cluster", 9100))
    run, cluster = (
        collector.watched[("run", "server", 0)],
        collector.watched[("cluster", "server", 0)],
    )
    assert (run.pid, run.url, run.api_key) == (100, "http://10.0.0.5:8100", "run-key")
    assert (cluster.pid, cluster.url, cluster.api_key) == (
        200,
        "http://10.0.0.5:9100",
        "cluster-key",
    )
    assert run.log == Path("/logs/run-0.log") and run.index == cluster.index == 0
    made.emit(ProcessState("server", 0, 8100, 100, "stopped"))  # the run's stops
    assert list(collector.watched) == [("cluster", "server", 0)]


def test_nginx_is_watched_without_a_url_to_poll_and_crashed_processes_are_dropped() -> None:
    made, _, collector = bridge()
    made.emit(ProcessState("nginx", 0, 8000, 300, "ready", url="http://10.0.0.5:8000"))
    nginx = collector.watched[("run", "nginx", 0)]
    assert nginx.url is None and nginx.log is None
    made.emit(ProcessState("nginx", 0, 8000, 300, "crashed", exit_code=1))
    assert collector.watched == {}


def test_a_real_collector_keys_by_owner_so_no_offset_is_needed() -> None:
    target = Target()
    collector = TelemetryCollector(lambda _: None)
    try:
        made = EventBridge(target, collector, keys)  # type: ignore[arg-type]
        made.emit(server(0, 100, "run", 8100))
        made.emit(server(0, 200, "cluster", 9100))
        assert sorted(collector._watched) == [("cluster", "server", 0), ("run", "server", 0)]
    finally:
        collector.close()


def test_crashes_and_notices_are_told_at_once() -> None:
    crash = ProcessState("server", 2, 8102, 7, "crashed", detail="exit status -9")
    assert notification(crash) == ("llama-server #2 crashed: exit status -9", "error", 15)
    assert notification(Notice("warning", "slow")) == ("slow", "warning", 10)
    assert notification(Notice("info", "hi")) == ("hi", "information", 10)
    assert notification(server(0, 1, "run", 8100)) is None


def test_a_hung_server_is_told_once_and_its_killed_process_unwatched() -> None:
    made, _, collector = bridge()
    made.emit(server(1, 100, "run", 8101))
    hung = InstanceHung(1, 8101, 100, silent_since=50.0, at=61.0)
    told = "llama-server #1 (port 8101) hung: no answer to /health for 11 s; killed it"
    assert notification(hung) == (told, "error", 15)
    made.emit(ProcessState("server", 1, 8101, 100, "hung", exit_code=-9, detail=told))
    assert collector.watched == {}
    assert notification(ProcessState("server", 1, 8101, 100, "hung", detail=told)) is None
