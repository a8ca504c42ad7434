"""Processes an earlier lab left behind when it died without stopping them.

On Linux the kernel's parent-death signal takes our servers down with the lab, but not on
macOS, nor when a server ignores SIGTERM. So every child is recorded in its run folder with
its own and its starter's start times: a recorded process that still runs while its starter is
gone is a leftover. Start times, not PIDs alone, decide, since PIDs are reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

from tui_lab.engine.processes.pids import alive_as_started, start_time
from tui_lab.engine.processes.run_folder import lab_home

REGISTRY = "processes.jsonl"


@dataclass(frozen=True)
class Leftover:
    pid: int
    name: str
    run_dir: Path

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid}, {self.run_dir.name})"


def record_child(run_dir: Path, name: str, pid: int) -> None:
    """Append one line; a lab that dies mid-write leaves at most a partial last line."""
    entry = {
        "pid": pid,
        "name": name,
        "started": start_time(pid),
        "owner": os.getpid(),
        "owner_started": start_time(os.getpid()),
    }
    with (run_dir / REGISTRY).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _entries(path: Path) -> list[dict[str, object]]:
    entries = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
    return entries


def find_leftovers(home: Path | None = None) -> list[Leftover]:
    """Recorded processes still running whose starter (a lab, a sweep, a cluster) is gone."""
    found = []
    for path in sorted((home or lab_home()).glob(f"**/{REGISTRY}")):
        for entry in _entries(path):
            pid = entry.get("pid")
            if (
                isinstance(pid, int)
                and entry.get("started") is not None
                and alive_as_started(pid, entry.get("started"))
                and not alive_as_started(entry.get("owner"), entry.get("owner_started"))
            ):
                found.append(Leftover(pid, str(entry.get("name")), path.parent))
    return found


def stop_leftovers(leftovers: list[Leftover], grace_s: float = 10.0) -> list[Leftover]:
    """SIGTERM each one's process group (nginx has workers), SIGKILL what outlasts the grace;
    returns those that could not be stopped (e.g. another user's)."""
    procs = []
    for left in leftovers:
        with contextlib.suppress(psutil.Error):
            procs.append((left, psutil.Process(left.pid)))
        _signal(left.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs([p for _, p in procs], timeout=grace_s)
    for proc in alive:
        _signal(proc.pid, signal.SIGKILL)
    _, still = psutil.wait_procs(alive, timeout=2)
    stuck = {p.pid for p in still}
    return [left for left, _ in procs if left.pid in stuck]


def _signal(pid: int, sig: signal.Signals) -> None:
    """The whole group when the process leads one (ours all do), else the process alone."""
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
