"""One llama-server: started, watched until `/health` says ready, stopped, or reported crashed."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import EventSink, InstanceHung, ProcessState, ProcessStatus
from tui_lab.engine.processes.process import ManagedProcess

HEALTH_POLL_S = 0.25


def control_session() -> aiohttp.ClientSession:
    """For health and metrics polls: each request closes its connection, so an idle poll
    connection never holds one of llama-server's HTTP threads (see default_threads_http)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def connect_host(host: str) -> str:
    """Where a client on this box reaches a server bound to `host` (a wildcard is not dialable)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def http_url(host: str, port: int) -> str:
    h = connect_host(host)
    return f"http://[{h}]:{port}" if ":" in h else f"http://{h}:{port}"


class ServerInstance:
    """A llama-server process and the states it passes through, emitted as `ProcessState` events."""

    def __init__(
        self,
        index: int,
        host: str,
        port: int,
        argv: list[str],
        log_path: Path,
        emit: EventSink,
        *,
        cpus: tuple[int, ...] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.index = index
        self.port = port
        self.url = http_url(host, port)
        self.emit = emit
        self.state: ProcessStatus = "stopped"
        self.started: float | None = None  # time.time() at its start, for its uptime
        self.hung: InstanceHung | None = None  # why the lab killed it (liveness.py)
        self.process = ManagedProcess(
            f"llama-server #{index}",
            argv,
            log_path,
            on_exit=self._exited,
            cpus=cpus,
            env={**os.environ, **env} if env else None,
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _set(self, state: ProcessStatus, detail: str = "") -> None:
        self.state = state
        self.emit(
            ProcessState(
                role="server",
                index=self.index,
                port=self.port,
                pid=self.pid,
                state=state,
                exit_code=self.process.returncode,
                log_path=self.process.log_path,
                detail=detail,
                url=self.url,
                started=self.started,
            )
        )

    def _exited(self, process: ManagedProcess) -> None:
        if process.stopping:
            self._set("stopped")
        elif self.hung is not None:
            self._set("hung", self.hung.describe())
        else:
            tail = " | ".join(process.log_tail(5))
            self._set("crashed", f"exit status {process.returncode}; last log lines: {tail}")

    async def start(self) -> None:
        await self.process.start()
        self.started = time.time()
        self._set("starting")

    async def wait_ready(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        """Poll `/health` until 200; 503 means the model is still loading."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.running:
                raise LabError(self._failure(f"exited with status {self.process.returncode}"))
            try:
                async with session.get(
                    f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        self._set("ready")
                        return
                    if resp.status == 503 and self.state != "loading":
                        self._set("loading")
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(HEALTH_POLL_S)
        raise LabError(self._failure(f"not ready after {timeout_s:.0f} s"))

    def _failure(self, what: str) -> str:
        tail = " | ".join(line for line in self.process.log_tail(5) if line.strip())
        return f"llama-server #{self.index} (port {self.port}) {what}; last log lines: {tail}"

    def kill_hung(self, silent_since: float) -> InstanceHung:
        """Declare it hung (silent since `silent_since`, time.time()) and kill it: nginx then
        fails the requests it holds at once and sends the next ones to the others."""
        self.hung = InstanceHung(self.index, self.port, self.pid, silent_since, time.time())
        self.emit(self.hung)
        self.process.kill()
        return self.hung

    async def stop(self, grace_s: float = 10.0) -> None:
        await self.process.stop(grace_s)
