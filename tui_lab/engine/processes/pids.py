"""Whether a recorded PID is still the process that was recorded.

PIDs are reused, so every record of a process the lab keeps (run folders, state files, the
watchdog's parent) carries its start time as well, and both must match.
"""

from __future__ import annotations

import psutil

# psutil derives start times from boot time and clock ticks: one process always reads the same,
# a process that reused the PID started later by far more than this.
SAME_START_S = 1.0


def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def alive_as_started(pid: object, started: object) -> bool:
    """`pid` runs (not a zombie) and started at `started`; None for `started` skips that check."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is None:
            return True
        if not isinstance(started, int | float):
            return False
        return abs(proc.create_time() - started) < SAME_START_S
    except psutil.Error:
        return False
