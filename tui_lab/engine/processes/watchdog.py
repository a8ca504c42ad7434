"""Stops a server's process group once the lab that started it is gone.

Linux has the kernel do this (`PR_SET_PDEATHSIG`, see process.py); macOS has no equivalent, so
there each child gets this small watchdog, in its own session so it outlives a SIGKILLed lab.
It exits by itself as soon as the group is gone, whichever way that happened.

    python -m tui_lab.engine.processes.watchdog PARENT_PID PARENT_START_TIME GROUP
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from tui_lab.engine.processes.pids import alive_as_started

POLL_S = 0.5
GRACE_S = 10.0


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_group(group: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGKILL)


def watch(parent: int, parent_started: float, group: int) -> None:
    while _group_alive(group):
        if not alive_as_started(parent, parent_started):
            _stop_group(group)
            return
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    parent, parent_started, group = int(argv[0]), float(argv[1]), int(argv[2])
    watch(parent, parent_started, group)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
