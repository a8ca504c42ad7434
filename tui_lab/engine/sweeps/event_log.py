"""Engine events as JSON lines in a file: how a detached sweep tells its watchers what happens.

A detached sweep has no terminal and no app to post to, so it appends what the UI needs to a
file in its run folder; `llamalab sweep attach` and the TUI read it back as the same events a
sweep in the foreground emits, so one progress bar and one dashboard serve both. Requests are
written as counts (`RequestsDone`), not a line each: 1024 clients would otherwise write
thousands of lines a second.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from tui_lab.engine.events import (
    CellFinished,
    CellStarted,
    Event,
    InstanceHung,
    Notice,
    PlanRevised,
    ProcessState,
    RequestDone,
    RequestsDone,
    RunFinished,
    RunStarted,
)
from tui_lab.engine.load.stats import Percentiles, RunSummary

COUNTS_EVERY_S = 0.5
_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        ProcessState,
        InstanceHung,
        RunStarted,
        PlanRevised,
        CellStarted,
        RequestsDone,
        CellFinished,
        Notice,
        RunFinished,
    )
}
_PATHS = ("log_path", "results_csv")


def encode(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, RunSummary):
            value = value.to_json_dict()
        elif f.name == "params":
            value = dict(value)
        out[f.name] = value
    return out


def decode(data: object) -> Event:
    """One parsed line back into its event; a line this version cannot read raises ValueError."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    cls = _TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
    for name in _PATHS:
        if values.get(name) is not None:
            values[name] = Path(values[name])
    if values.get("summary") is not None:
        values["summary"] = _summary(values["summary"])
    try:
        return cls(**values)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _summary(data: dict[str, Any]) -> RunSummary:
    values: dict[str, Any] = {}
    for f in fields(RunSummary):
        value = data[f.name]
        if isinstance(value, dict) and f.name != "errors":
            value = Percentiles(**value)
        values[f.name] = value
    values["errors"] = MappingProxyType(dict(data["errors"]))
    return RunSummary(**values)


class EventLog:
    """The sink a detached sweep emits into: a line per event, request counts every half second
    (and before any other event, so the order stays true)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._counts: dict[int, list[int]] = {}  # cell -> [ok, failed]
        self._counted_at = time.monotonic()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RequestDone):
            counts = self._counts.setdefault(event.cell, [0, 0])
            counts[0 if event.record.ok else 1] += 1
            if time.monotonic() - self._counted_at >= COUNTS_EVERY_S:
                self._write_counts()
            return
        self._write_counts()
        self._write(encode(event))

    def _write_counts(self) -> None:
        for cell, (ok, failed) in self._counts.items():
            self._write(encode(RequestsDone(cell, ok, failed)))
        self._counts.clear()
        self._counted_at = time.monotonic()

    def _write(self, data: dict[str, Any]) -> None:
        self._file.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._write_counts()
        self._file.close()


class EventReader:
    """Reads the events appended since the last call; a line still being written waits for
    the next call rather than being parsed half."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read_new(self) -> list[Event]:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []
        whole = data[: data.rfind(b"\n") + 1]
        self._offset += len(whole)
        events = []
        for line in whole.decode("utf-8", errors="replace").splitlines():
            try:
                events.append(decode(json.loads(line)))
            except ValueError as exc:
                events.append(Notice("warning", f"{self.path}: unreadable event ({exc})"))
        return events
