"""What happened to a cell's processes while it ran, watched and then said in its row.

A server that stops answering /health for the liveness timeout is declared hung and killed
(processes/liveness.py): requests go through nginx, so the client cannot tell which of them
wait on that server, but with its process gone nginx fails exactly those at once (502, or a
closed stream) and sends the rest of the cell to the others. Without that, a frozen server
holds its requests for the whole request timeout (600 s by default) and keeps receiving new
ones. A server or nginx that exits by itself is noticed by its process object; either way the
cell's row names the process and when it went, beside the per-kind error counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType

import aiohttp

from tui_lab.engine.processes.cluster import Cluster
from tui_lab.engine.processes.liveness import HealthTarget, watch
from tui_lab.engine.processes.process import ManagedProcess


class CellWatch:
    """For one cell: the liveness watch over its cluster's servers while the cell runs (none
    when `timeout_s` is None), and the faults seen, relative to the cell's start."""

    def __init__(
        self,
        cluster: Cluster,
        session: aiohttp.ClientSession,
        timeout_s: float | None,
    ) -> None:
        self.cluster = cluster
        self.session = session
        self.timeout_s = timeout_s
        # time.time() when the cell's measuring began, on ready servers: what "+12.3 s" counts from
        self.cell_started = time.time()
        self.instances = list(cluster.instances)  # a restart mid-cell replaces the list's items
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CellWatch:
        if self.timeout_s is not None:
            targets = [HealthTarget(i.index, i.url) for i in self.instances]
            self._task = asyncio.create_task(
                watch(
                    self.session,
                    targets,
                    self.timeout_s,
                    self._hung,
                    ready_since=time.monotonic(),  # the cluster was ready when the cell began
                )
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _hung(self, target: HealthTarget, last_answer: float) -> None:
        inst = self.instances[target.index]
        if not inst.process.running:
            return  # silent because it exited: a crash, which its exit reports
        inst.kill_hung(time.time() - (time.monotonic() - last_answer))

    def faults(self) -> list[str]:
        """Each process that hung or went during the cell, for the row's `error`:
        "instance 1 hung at +12.3 s (port 8081)", "nginx crashed at +4.0 s (port 8000, exit -9)"."""
        found = []
        for inst in self.instances:
            if inst.hung is not None:
                at = self._since_start(inst.hung.silent_since)
                found.append(f"instance {inst.index} hung at {at} (port {inst.port})")
            elif (crash := self._crash(inst.process, inst.port)) is not None:
                found.append(f"instance {inst.index} crashed at {crash}")
        proxy = self.cluster.proxy
        if proxy is not None and (crash := self._crash(proxy.process, proxy.spec.listen_port)):
            found.append(f"nginx crashed at {crash}")
        return found

    def _crash(self, process: ManagedProcess, port: int) -> str | None:
        """When and how a process exited unasked during this cell: "+3.2 s (port 8081, exit -9)"."""
        if process.stopping or process.ended is None or process.ended < self.cell_started:
            return None
        return f"{self._since_start(process.ended)} (port {port}, exit {process.returncode})"

    def _since_start(self, moment: float) -> str:
        return f"+{max(0.0, moment - self.cell_started):.1f} s"
