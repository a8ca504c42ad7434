"""psutil's figures for a process and all its descendants: nginx's workers, a server's helpers.

A figure of the parent alone would hide where the CPU and memory went: nginx's master does
nothing, its workers do the work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import psutil

# ZombieProcess is a NoSuchProcess: a process that has exited but is not yet reaped is gone.
_PROCESS_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)


@dataclass(frozen=True)
class Family:
    """psutil's figures for a process plus all its descendants."""

    alive: bool
    pids: tuple[int, ...] = ()
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    threads: int | None = None


GONE = Family(alive=False)


class ProcessFamilies:
    """Reads families round after round. psutil's cpu_percent measures since its previous call
    on the same Process object, so the objects live across rounds; keyed by PID, so a replaced
    process starts afresh."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def read(self, pids: list[int]) -> list[Family]:
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
    ) -> Family:
        """A child seen for the first time adds 0 % CPU this round (psutil has no interval for
        it yet); the parent's first round has no CPU figure at all."""
        try:
            main, fresh = self._process(pid, kept)
            if main.status() == psutil.STATUS_ZOMBIE:
                return GONE
            readings = [_read(main)]
        except _PROCESS_GONE:
            return GONE
        for child in _descendants(pid, children):
            # A worker exiting mid-read is simply not counted; the parent's figures still hold.
            with contextlib.suppress(*_PROCESS_GONE):
                readings.append(_read(self._process(child, kept)[0]))
        return Family(
            alive=True,
            pids=tuple(r.pid for r in readings),
            cpu_percent=None if fresh else sum(r.cpu_percent for r in readings),
            rss_bytes=sum(r.rss_bytes for r in readings),
            threads=sum(r.threads for r in readings),
        )

    def _process(self, pid: int, kept: dict[int, psutil.Process]) -> tuple[psutil.Process, bool]:
        """The Process object from earlier rounds, or a new one (fresh: no CPU interval yet)."""
        earlier = self._processes.get(pid)
        # is_running() also detects a PID reused by another process since the last round
        fresh = earlier is None or not earlier.is_running()
        proc = psutil.Process(pid) if earlier is None or fresh else earlier
        kept[pid] = proc
        return proc, fresh


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
