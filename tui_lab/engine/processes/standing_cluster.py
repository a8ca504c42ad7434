"""The standing cluster: servers + nginx left serving for outside clients (Open WebUI, agents).

It is the one deliberate exception to "nothing outlives the lab", so it is owned by a small
detached supervisor process (`llamalab cluster serve`) rather than by whoever started it. The
supervisor's children die with it (PDEATHSIG), it records what runs in a state file, and
`cluster stop` asks it to stop everything cleanly. A dropped SSH session does not touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Event, InstanceTelemetry, ProcessState, ProcessStatus
from tui_lab.engine.plan.config import Balance, LabConfig, Layout
from tui_lab.engine.processes.cluster import Cluster, ClusterSpec, required_ports
from tui_lab.engine.processes.instance import control_session, http_url
from tui_lab.engine.processes.pids import alive_as_started
from tui_lab.engine.processes.ports import ensure_free
from tui_lab.engine.processes.process import spawn_detached, terminate_and_wait
from tui_lab.engine.processes.run_folder import cluster_dir, write_state_file
from tui_lab.engine.telemetry.collector import NOT_RUNNING_REASON, TelemetryCollector, Watched

STATE_FILE = "state.json"
STOP_TIMEOUT_S = 30.0


def state_path() -> Path:
    return cluster_dir() / STATE_FILE


def read_state() -> dict[str, Any] | None:
    try:
        return json.loads(state_path().read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise LabError(f"cluster state file unreadable: {state_path()} ({exc})") from None


def write_state(state: dict[str, Any]) -> None:
    write_state_file(state_path(), state)


def supervisor_alive(state: dict[str, Any]) -> bool:
    return alive_as_started(state.get("supervisor_pid"), state.get("supervisor_started"))


def running_state() -> dict[str, Any] | None:
    """The state of a live standing cluster, clearing a stale file left by a killed supervisor."""
    state = read_state()
    if state is None:
        return None
    if supervisor_alive(state):
        return state
    with contextlib.suppress(FileNotFoundError):
        state_path().unlink()
    return None


def _entry(event: ProcessState) -> dict[str, Any]:
    return {
        "index": event.index,
        "port": event.port,
        "pid": event.pid,
        "state": event.state,
        "exit_code": event.exit_code,
        "log": str(event.log_path) if event.log_path else None,
        "detail": event.detail,
        "started": event.started,
    }


async def serve(lab: LabConfig, layout: Layout, balance: Balance) -> int:
    """The supervisor's body: start, record, wait for a stop signal, stop; returns exit status."""
    run_dir = cluster_dir()
    me = psutil.Process()
    state: dict[str, Any] = {
        "supervisor_pid": me.pid,
        "supervisor_started": me.create_time(),
        "status": "starting",
        "endpoint": http_url(lab.host, lab.nginx_port),
        "host": lab.host,
        "api_key": lab.api_key,  # for the lab's own polls; never printed (see public_view)
        "model": str(lab.model),
        "instances_requested": layout.instances,
        "parallel": layout.parallel,
        "balance": balance,
        "nginx": {"port": lab.nginx_port, "pid": None, "state": "stopped"},
        "instances": [
            {"index": i, "port": lab.base_port + i, "pid": None, "state": "stopped"}
            for i in range(layout.instances)
        ],
        "error": None,
    }
    write_state(state)

    def record(event: Event) -> None:
        if isinstance(event, ProcessState):
            if event.role == "nginx":
                state["nginx"] = _entry(event)
            else:
                state["instances"][event.index] = _entry(event)
            write_state(state)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    cluster = Cluster(lab, ClusterSpec(layout, balance, max_concurrency=1024), run_dir, record)
    status = 0
    try:
        async with control_session() as session:
            await cluster.start(session)
        state["status"] = "ready"
        write_state(state)
        await stop.wait()
    except LabError as exc:
        state["status"] = "failed"
        state["error"] = str(exc)
        status = 1
    finally:
        await cluster.stop()
        if status == 0:
            with contextlib.suppress(FileNotFoundError):
                state_path().unlink()
        else:
            write_state(state)
    return status


def start_detached(
    lab: LabConfig, instances: int, serve_args: Sequence[str], timeout_s: float
) -> dict[str, Any]:
    """Launch the supervisor and wait until it reports ready or failed."""
    existing = running_state()
    if existing is not None:
        raise LabError(
            f"a cluster is already running at {existing['endpoint']} "
            f"(supervisor pid {existing['supervisor_pid']}); stop it with: llamalab cluster stop"
        )
    ensure_free(lab.host, required_ports(lab, instances, True))
    log_path = cluster_dir() / "supervisor.log"
    proc = spawn_detached(
        [sys.executable, "-m", "tui_lab.cli", "cluster", "serve", *serve_args], log_path
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state()
        if state and state.get("supervisor_pid") == proc.pid:
            if state["status"] == "ready":
                return state
            if state["status"] == "failed":
                proc.wait(timeout=STOP_TIMEOUT_S)
                state_path().unlink(missing_ok=True)
                raise LabError(state["error"])
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(
                f"cluster supervisor exited with status {proc.returncode}: {' | '.join(tail)}"
            )
        time.sleep(0.2)
    proc.terminate()
    proc.wait(timeout=STOP_TIMEOUT_S)
    raise LabError(f"cluster not ready after {timeout_s:.0f} s; logs in {cluster_dir()}")


def stop_running() -> dict[str, Any] | None:
    """Ask the supervisor to stop everything; force what is left after the timeout."""
    state = running_state()
    if state is None:
        return None
    pid = state["supervisor_pid"]
    if not terminate_and_wait(pid, state.get("supervisor_started"), STOP_TIMEOUT_S):
        for entry in [state["nginx"], *state["instances"]]:
            if entry.get("pid"):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(entry["pid"], signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    state_path().unlink(missing_ok=True)
    return state


async def _probe(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return {200: "ready", 503: "loading", 401: "ready"}.get(
                resp.status, f"http_{resp.status}"
            )
    except (aiohttp.ClientError, TimeoutError):
        return "not answering"


async def live_status() -> dict[str, Any] | None:
    """The recorded state, with each process's state checked now rather than trusted."""
    state = running_state()
    if state is None:
        return None
    host = state["host"]
    async with control_session() as session:
        for entry in [state["nginx"], *state["instances"]]:
            if not alive_as_started(entry.get("pid"), None):
                entry["state"] = "stopped" if entry.get("state") == "stopped" else "crashed"
            else:
                entry["state"] = await _probe(session, http_url(host, entry["port"]))
    return state


FIGURES = (
    "cpu_percent",
    "rss_bytes",
    "gpu_memory_bytes",
    "gpu_reason",
    "tokens_per_s",
    "slots_busy",
    "slots_total",
    "requests_served",
)
FIGURES_GAP_S = 1.0


def public_view(state: dict[str, Any]) -> dict[str, Any]:
    """What `cluster status` shows: the state less the API key (a terminal is often shared,
    and scrollback or logs keep what was printed)."""
    return {k: v for k, v in state.items() if k != "api_key"}


async def add_latest_figures(state: dict[str, Any], gap_s: float = FIGURES_GAP_S) -> None:
    """Each instance's CPU, memory, GPU memory, tok/s and slots, written into its entry.

    Two telemetry rounds `gap_s` apart: CPU % and tok/s are rates over an interval, so the first
    round has none of them. A figure that cannot be read is None (the GPU's with its reason),
    never a made-up 0.
    """
    collector = TelemetryCollector(lambda _: None)
    host = state["host"]
    try:
        for entry in state["instances"]:
            if entry.get("pid"):
                url = http_url(host, entry["port"])
                log = Path(entry["log"]) if entry.get("log") else None
                collector.watch(
                    Watched("server", entry["index"], entry["pid"], url, log, state.get("api_key"))
                )
        await collector.sample_once()
        await asyncio.sleep(gap_s)
        samples = await collector.sample_once()
    finally:
        collector.close()
    latest = {s.index: s for s in samples if isinstance(s, InstanceTelemetry)}
    for entry in state["instances"]:
        sample = latest.get(entry["index"])
        for name in FIGURES:
            entry[name] = getattr(sample, name) if sample else None
        if sample is None:
            entry["gpu_reason"] = NOT_RUNNING_REASON


def process_states(state: dict[str, Any]) -> list[ProcessState]:
    """The cluster's processes as the same events a run emits, so one panel shows both."""
    out = []
    for role, entries in (("nginx", [state["nginx"]]), ("server", state["instances"])):
        for entry in entries:
            status: ProcessStatus = entry.get("state", "stopped")
            if status not in ("starting", "loading", "ready", "crashed", "stopped"):
                status = "not answering"
            log = entry.get("log")
            out.append(
                ProcessState(
                    role=role,  # type: ignore[arg-type]
                    index=entry.get("index", 0),
                    port=entry["port"],
                    pid=entry.get("pid"),
                    state=status,
                    exit_code=entry.get("exit_code"),
                    log_path=Path(log) if log else None,
                    detail=entry.get("detail", ""),
                    owner="cluster",
                    url=http_url(state["host"], entry["port"]),
                    started=entry.get("started"),
                )
            )
    return out
