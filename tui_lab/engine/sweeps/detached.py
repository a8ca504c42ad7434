"""A sweep that goes on without its terminal, and the ways back to it: attach, stop.

A sweep started over SSH dies with the session unless it runs detached. A detached sweep is the
headless `llamalab sweep resume` of results files created in the foreground (so every mistake
is still reported before anything starts), run in its own session with no terminal. It writes
its state and its events to its run folder; `attach` replays and follows them, `stop` sends it
SIGTERM so it stops its servers and keeps its finished cells. Its servers die with it
(PDEATHSIG), like any run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Event, Notice, RunFinished, RunStarted
from tui_lab.engine.processes.pids import alive_as_started
from tui_lab.engine.processes.process import spawn_detached, terminate_and_wait
from tui_lab.engine.processes.run_folder import lab_home, new_run_dir, write_state_file
from tui_lab.engine.results.reader import read_meta
from tui_lab.engine.sweeps.event_log import EventReader

STATE_FILE = "detached.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "sweep.log"
# The key reaches the detached process through its environment: not on disk, not in `ps`.
API_KEY_ENV = "LLAMALAB_API_KEY"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.3


@dataclass(frozen=True)
class DetachedRun:
    """What a detached sweep records about itself in its run folder's state file: who it is
    (PID and start time, since PIDs are reused) and where its files are."""

    pid: int
    pid_started: float | None
    run: str  # the sweep's name, e.g. "sweep-full"
    started_at: str  # ISO 8601, UTC: orders the runs, newest first
    run_dir: Path
    events: Path
    log: Path
    meta: Path
    jsonl: Path
    csv: Path

    def to_json(self) -> dict[str, Any]:
        """The state file's content: paths as strings, as it has always been written."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: object) -> DetachedRun | None:
        """The state of a state file's content; None for one that is not a detached run's."""
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return None
        started = data.get("pid_started")
        try:
            return cls(
                pid=data["pid"],
                pid_started=float(started) if isinstance(started, int | float) else None,
                run=str(data["run"]),
                started_at=str(data.get("started_at", "")),
                **{name: Path(str(data[name])) for name in _PATHS},
            )
        except KeyError:
            return None


_PATHS = ("run_dir", "events", "log", "meta", "jsonl", "csv")


def launch(meta_path: Path, *, api_key: str = "", retry_failed: bool = False) -> DetachedRun:
    """Start the detached sweep of a sweep's files and return its state once it has started."""
    meta = read_meta(meta_path)
    run_dir = new_run_dir(f"{meta['sweep_name']}-detached")
    jsonl = meta_path.with_name(str(meta["jsonl"]))
    argv = [sys.executable, "-m", "tui_lab.cli", "sweep", "resume", str(jsonl)]
    argv += ["--detached-run-dir", str(run_dir)]
    if retry_failed:
        argv.append("--retry-failed")
    env = {**os.environ, API_KEY_ENV: api_key} if api_key else None
    log = run_dir / LOG_FILE
    proc = spawn_detached(argv, log, env)
    state = DetachedRun(
        pid=proc.pid,
        pid_started=psutil.Process(proc.pid).create_time(),
        run=str(meta["sweep_name"]),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_dir=run_dir,
        events=run_dir / EVENTS_FILE,
        log=log,
        meta=meta_path,
        jsonl=jsonl,
        csv=meta_path.with_name(str(meta["csv"])),
    )
    write_state_file(run_dir / STATE_FILE, state.to_json())
    reader = EventReader(state.events)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(isinstance(e, RunStarted) for e in reader.read_new()):
            return state
        if proc.poll() is not None:
            raise LabError(f"the detached sweep exited at once: {_log_tail(state)}")
        time.sleep(0.1)
    stop(state)
    raise LabError(f"the detached sweep did not start within {START_TIMEOUT_S:.0f} s; log: {log}")


def _log_tail(state: DetachedRun, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        tail = state.log.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(tail) or f"(empty log {state.log})"
    return f"(no log at {state.log})"


def states() -> list[DetachedRun]:
    """Every detached sweep's state, newest first."""
    found = []
    for path in (lab_home() / "runs").glob(f"*/{STATE_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            state = DetachedRun.from_json(json.loads(path.read_text()))
            if state is not None:
                found.append(state)
    return sorted(found, key=lambda s: s.started_at, reverse=True)


def alive(state: DetachedRun) -> bool:
    return alive_as_started(state.pid, state.pid_started)


def running() -> DetachedRun | None:
    """The newest detached sweep that still runs."""
    return next((s for s in states() if alive(s)), None)


def latest() -> DetachedRun | None:
    """The one to attach to: the running one, else the newest (to see how it ended)."""
    all_states = states()
    return next((s for s in all_states if alive(s)), all_states[0] if all_states else None)


def stop(state: DetachedRun) -> None:
    """SIGTERM: the sweep cancels, stops its servers and records that it was cancelled. SIGKILL
    to its session if it has not ended in time; its servers then die with it (PDEATHSIG)."""
    if not terminate_and_wait(state.pid, state.pid_started, STOP_TIMEOUT_S):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(state.pid, signal.SIGKILL)


def ended_without_finishing(state: DetachedRun) -> Notice:
    return Notice(
        "error",
        f"the detached {state.run} (pid {state.pid}) ended without finishing: {_log_tail(state)}",
    )


class Follower:
    """Reads a detached sweep's events as they come, and notices when it has ended."""

    def __init__(self, state: DetachedRun) -> None:
        self.state = state
        self._reader = EventReader(state.events)
        self.done = False
        self.finished = False  # it ended with its RunFinished (done, or stopped cleanly)

    def poll(self) -> list[Event]:
        """The events since the last poll, from the very first on the first call."""
        running = alive(self.state)  # before reading, so no last event is missed
        events = self._reader.read_new()
        if any(isinstance(e, RunFinished) for e in events):
            self.done = self.finished = True
        elif not running:
            events.append(ended_without_finishing(self.state))
            self.done = True
        return events
