"""The nginx round-robin proxy as a managed process, its configuration checked before start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import psutil

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import EventSink, ProcessState, ProcessStatus
from tui_lab.engine.processes.instance import HEALTH_POLL_S, http_url
from tui_lab.engine.processes.nginx_config import ProxySpec, render
from tui_lab.engine.processes.process import ManagedProcess


def nginx_base_args(nginx_bin: Path, run_dir: Path) -> list[str]:
    """`-e` keeps nginx from opening the packaged /var/log/nginx/error.log before it reads ours."""
    return [
        str(nginx_bin),
        "-e",
        str(run_dir / "nginx-error.log"),
        "-p",
        str(run_dir),
        "-c",
        str(run_dir / "nginx.conf"),
    ]


async def check_config(nginx_bin: Path, run_dir: Path) -> None:
    """`nginx -t` on the written file: a bad config is reported before anything listens."""
    proc = await asyncio.create_subprocess_exec(
        *nginx_base_args(nginx_bin, run_dir),
        "-t",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        lines = [
            ln
            for ln in out.decode(errors="replace").splitlines()
            if "emerg" in ln or "failed" in ln
        ]
        raise LabError(f"nginx -t rejected the configuration: {' | '.join(lines) or out.decode()}")


def write_config(spec: ProxySpec) -> Path:
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (spec.run_dir / "nginx-temp" / kind).mkdir(parents=True, exist_ok=True)
    path = spec.run_dir / "nginx.conf"
    path.write_text(render(spec))
    return path


class NginxProxy:
    def __init__(self, nginx_bin: Path, spec: ProxySpec, emit: EventSink) -> None:
        self.nginx_bin = nginx_bin
        self.spec = spec
        self.emit = emit
        self.url = http_url(spec.listen_host, spec.listen_port)
        self.state: ProcessStatus = "stopped"
        self.started: float | None = None  # time.time() at its start, for its uptime
        self.process = ManagedProcess(
            "nginx",
            [*nginx_base_args(nginx_bin, spec.run_dir), "-g", "daemon off;"],
            spec.run_dir / "nginx-stdout.log",
            on_exit=self._exited,
        )

    def _set(self, state: ProcessStatus, detail: str = "") -> None:
        self.state = state
        self.emit(
            ProcessState(
                role="nginx",
                index=0,
                port=self.spec.listen_port,
                pid=self.process.pid,
                state=state,
                exit_code=self.process.returncode,
                log_path=self.spec.run_dir / "nginx-error.log",
                detail=detail,
                url=self.url,
                started=self.started,
            )
        )

    def _exited(self, process: ManagedProcess) -> None:
        if process.stopping:
            self._set("stopped")
        else:
            self._set("crashed", f"exit status {process.returncode}: {self.error_tail()}")

    def error_tail(self) -> str:
        path = self.spec.run_dir / "nginx-error.log"
        try:
            lines = path.read_text(errors="replace").splitlines()[-3:]
        except OSError:
            lines = []
        return " | ".join(lines + self.process.log_tail(3))

    async def start(self, session: aiohttp.ClientSession, timeout_s: float = 15.0) -> None:
        write_config(self.spec)
        await check_config(self.nginx_bin, self.spec.run_dir)
        await self.process.start()
        self.started = time.time()
        self._set("starting")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.running:
                raise LabError(f"nginx exited at start: {self.error_tail()}")
            try:
                async with session.get(
                    f"{self.url}/health", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status in (200, 401):
                        self._set("ready")
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(HEALTH_POLL_S)
        raise LabError(f"nginx did not answer on port {self.spec.listen_port}: {self.error_tail()}")

    def worker_pids(self) -> set[int]:
        if self.process.pid is None:
            return set()
        with contextlib.suppress(psutil.Error):
            return {p.pid for p in psutil.Process(self.process.pid).children()}
        return set()

    async def reload(self, down: frozenset[int], timeout_s: float = 10.0) -> None:
        """Take the upstreams in `down` out of the rotation (and put the others back) without
        dropping a connection: SIGHUP makes nginx's master start workers on the new file while
        the old ones finish the requests they hold. Returns once a new worker runs, since a
        reload nginx refuses leaves the old workers serving and says so only in its log."""
        spec = replace(self.spec, down=down)
        write_config(spec)
        await check_config(self.nginx_bin, spec.run_dir)
        old = self.worker_pids()
        if not self.process.running or self.process.pid is None:
            raise LabError("nginx is not running, so it cannot reload")
        os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.worker_pids() - old:
                self.spec = spec
                return
            await asyncio.sleep(0.05)
        raise LabError(f"nginx did not reload within {timeout_s:.0f} s: {self.error_tail()}")

    async def stop(self) -> None:
        await self.process.stop(grace_s=5.0)
