"""A detached sweep's events survive the trip through its file, as the same events."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

from tui_lab.engine.events import (
    CellFinished,
    CellStarted,
    InstanceHung,
    Notice,
    PlanRevised,
    ProcessState,
    RequestDone,
    RequestsDone,
    RunFinished,
    RunStarted,
)
from tui_lab.engine.load.client import RequestRecord
from tui_lab.engine.load.stats import summarize
from tui_lab.engine.sweeps.event_log import EventLog, EventReader, decode, encode
from tui_lab.engine.sweeps.progress import ProgressTracker

PARAMS = {"instances": 2, "parallel": 4, "concurrency": 8, "batch_size": None}


def record(ok: bool) -> RequestRecord:
    return RequestRecord(
        index=0,
        start=0.0,
        end=0.5,
        status=200 if ok else 500,
        output_tokens=8 if ok else 0,
        prompt_tokens=5,
        first_token=None,
        chunk_times=(),
        retries=0,
        error=None if ok else "http_500",
    )


def test_every_event_the_ui_needs_round_trips() -> None:
    summary = summarize([record(True), record(False)], wall_s=1.0)
    events = [
        RunStarted("sweep-full", 4, 64),
        CellStarted(1, 4, PARAMS),
        ProcessState("server", 1, 8081, 1234, "crashed", 9, Path("/l/s1.log"), "oom"),
        InstanceHung(0, 8080, 1233, silent_since=1000.0, at=1011.5),
        RequestsDone(1, 7, 1),
        CellFinished(1, 4, PARAMS, summary, None),
        CellFinished(2, 4, PARAMS, None, "llama-server #0 crashed"),
        Notice("warning", "retrying"),
        RunFinished("sweep-full", 1, 1, Path("/r/x.csv"), cancelled=True),
        PlanRevised(3, 40),
    ]
    for event in events:
        assert decode(json.loads(json.dumps(encode(event)))) == event
    assert isinstance(decode(encode(events[5])).summary.errors, MappingProxyType)  # type: ignore[union-attr]


def test_requests_are_written_as_counts_and_progress_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log(RunStarted("sweep-full", 1, 5))
    for ok in (True, True, False, True, True):
        log(RequestDone(1, record(ok)))
    log(CellFinished(1, 1, PARAMS, None, None))
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["RunStarted", "RequestsDone", "CellFinished"]
    tracker = ProgressTracker()
    for event in EventReader(path).read_new():
        tracker.apply(event)
    assert (tracker.requests_done, tracker.requests_failed, tracker.cells_done) == (5, 1, 1)


def test_the_reader_waits_for_a_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read_new() == []  # no file yet
    line = json.dumps(encode(Notice("info", "hello")))
    path.write_text(line[:10])
    assert reader.read_new() == []
    path.write_text(line + "\n" + '{"type": "Nope"}\n')
    first, second = reader.read_new()
    assert first == Notice("info", "hello")
    assert isinstance(second, Notice) and "unknown event type 'Nope'" in second.text
    assert reader.read_new() == []
