"""The one adapter from engine events to Textual: a batch message per frame, and the telemetry
collector told which processes to watch.

The engine calls its sink from the event loop for every request, state change and telemetry
sample; posting a message for each would flood the loop with 1024 requests in flight. So events
wait here until the frame's tick and go to the dashboard together, in order. The processes
among them tell the collector what to sample, by their owner, role and index: a run's server 0
and the standing cluster's server 0 are two processes, watched apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from textual.message_pump import MessagePump

from tui_lab.engine.events import Event, InstanceHung, Notice, ProcessOwner, ProcessState
from tui_lab.engine.telemetry.collector import TelemetryCollector, Watched
from tui_lab.messages import EngineEvents

Severity = Literal["information", "warning", "error"]
ApiKeys = Callable[[ProcessOwner], str | None]  # the --api-key of a run's or the cluster's servers


class EventBridge:
    def __init__(
        self, target: MessagePump, collector: TelemetryCollector, api_key: ApiKeys
    ) -> None:
        self._target = target
        self._collector = collector
        self._api_key = api_key
        self._pending: list[Event] = []

    def emit(self, event: Event) -> None:
        """The engine's sink: kept for the next frame; a process also (un)watched at once, so
        the next telemetry round already samples it."""
        self._pending.append(event)
        if isinstance(event, ProcessState):
            self._watch(event)

    @property
    def waiting(self) -> int:
        """Events not yet posted: how far the UI is behind the engine within a frame."""
        return len(self._pending)

    def flush(self) -> None:
        """Once a frame: everything since the last one, as one message."""
        if self._pending:
            batch, self._pending = tuple(self._pending), []
            self._target.post_message(EngineEvents(batch))

    def _watch(self, event: ProcessState) -> None:
        if event.pid is None or event.state in ("stopped", "crashed", "hung"):
            self._collector.unwatch(event.role, event.index, event.owner)
            return
        server = event.role == "server"
        self._collector.watch(
            Watched(
                event.role,
                event.index,
                event.pid,
                event.url if server else None,  # nginx has no /metrics or /slots to poll
                event.log_path if server else None,
                self._api_key(event.owner),
                owner=event.owner,
            )
        )


def notification(event: Event) -> tuple[str, Severity, float] | None:
    """What a person must be told at once (text, severity, seconds shown): a crash, a hung
    server, a notice."""
    if isinstance(event, ProcessState) and event.state == "crashed":
        name = "nginx" if event.role == "nginx" else f"llama-server #{event.index}"
        return f"{name} crashed: {event.detail}", "error", 15
    if isinstance(event, InstanceHung):
        return event.describe(), "error", 15
    if isinstance(event, Notice):
        return event.text, "information" if event.level == "info" else event.level, 10
    return None
