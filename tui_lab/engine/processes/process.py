"""The one place a child process is started: its own process group, its log, its exit.

Every llama-server and nginx the lab starts is a `ManagedProcess`, so stopping is uniform
(SIGTERM to the group, SIGKILL after a grace period) and none outlives the lab: on Linux the
kernel sends SIGTERM to the child when the lab dies (`PR_SET_PDEATHSIG`), even on SIGKILL.
Elsewhere (macOS) a watchdog process per child does it (watchdog.py). Each child is also
recorded in its run folder, so the next start can offer to stop any that survived even that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from tui_lab.engine.processes.leftovers import record_child
from tui_lab.engine.processes.pids import alive_as_started, start_time

PR_SET_PDEATHSIG = 1


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec hook asking the kernel to SIGTERM the child when its parent dies (Linux only).

    prctl is resolved here, before fork, so the child runs no lookup between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


_DIE_WITH_PARENT = _die_with_parent_hook()


def _child_setup(cpus: tuple[int, ...] | None) -> Callable[[], None] | None:
    """What the child runs between fork and exec: the parent-death signal, and its CPU
    affinity, which every thread llama-server starts then inherits."""
    if cpus is None:
        return _DIE_WITH_PARENT
    die_with_parent = _DIE_WITH_PARENT
    allowed = set(cpus)

    def hook() -> None:
        if die_with_parent is not None:
            die_with_parent()
        os.sched_setaffinity(0, allowed)

    return hook


# Without the kernel's help, a watchdog process per child does the same job (macOS).
_WATCHDOG = _DIE_WITH_PARENT is None


async def _start_watchdog(group: int) -> None:
    lab = os.getpid()
    await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui_lab.engine.processes.watchdog",
        str(lab),
        repr(start_time(lab)),
        str(group),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # it must outlive a SIGKILLed lab: that is its job
    )


class ManagedProcess:
    """A child in its own process group, logging to a file, with a recorded exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        on_exit: Callable[[ManagedProcess], None] | None = None,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cpus = cpus  # CPU affinity, set in the child before exec (processes/placement.py)
        self.on_exit = on_exit
        self.stopping = False
        self.ended: float | None = None  # time.time() when it exited
        self._proc: asyncio.subprocess.Process | None = None
        self._waiter: asyncio.Task[int] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup(self.cpus),
                env=self.env,
            )
        record_child(self.log_path.parent, self.name, self._proc.pid)
        if _WATCHDOG:
            await _start_watchdog(self._proc.pid)
        self._waiter = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        self.ended = time.time()
        if self.on_exit is not None:
            self.on_exit(self)
        return code

    async def wait(self) -> int:
        assert self._waiter is not None, "wait() before start()"
        return await asyncio.shield(self._waiter)

    async def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the whole group (llama-server and nginx have children), SIGKILL if it lingers."""
        if self._proc is None or self._waiter is None:
            return None
        self.stopping = True
        if self._proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)  # a frozen (SIGSTOPped) one acts on it now
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), grace_s)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._waiter)
        # The group may hold workers that outlive their leader (nginx): clear it too.
        self._signal_group(signal.SIGKILL)
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL the group now, not as a stop: a frozen process would not act on SIGTERM, and
        its exit is then reported (on_exit) like any exit the lab did not ask for."""
        if self._proc is not None and self._proc.returncode is None:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def log_tail(self, lines: int = 15) -> list[str]:
        try:
            with self.log_path.open("r", errors="replace") as fh:
                return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
        except OSError:
            return []


def spawn_detached(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a lab process that outlives the terminal: its own session (no SIGHUP when the SSH
    session drops), no stdin, output to `log_path`. Its own children still die with it."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def terminate_and_wait(pid: int, started: float | None, timeout_s: float) -> bool:
    """SIGTERM a lab process and give it `timeout_s` to stop its servers and end; False when
    it is still running then (the caller decides how to force it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive_as_started(pid, started):
        time.sleep(0.1)
    return not alive_as_started(pid, started)
