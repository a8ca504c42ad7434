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
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, cast, get_args

import aiohttp
import psutil

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import (
    Event,
    InstanceTelemetry,
    ProcessRole,
    ProcessState,
    ProcessStatus,
)
from tui_lab.engine.plan.config import Balance, LabConfig, Layout
from tui_lab.engine.processes.cluster import Cluster, ClusterSpec, required_ports
from tui_lab.engine.processes.cluster_health import HISTORY_KEPT, Healer, Incident
from tui_lab.engine.processes.instance import control_session, http_url
from tui_lab.engine.processes.nginx_config import STANDING_FAILOVER
from tui_lab.engine.processes.pids import alive_as_started
from tui_lab.engine.processes.ports import ensure_free
from tui_lab.engine.processes.process import spawn_detached, terminate_and_wait
from tui_lab.engine.processes.run_folder import cluster_dir, write_state_file
from tui_lab.engine.telemetry.collector import NOT_RUNNING_REASON, TelemetryCollector, Watched

STATE_FILE = "state.json"
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ClusterFigures:
    """An instance's latest figures, for `cluster status --json`: None where one cannot be
    read (the GPU's with its reason), never a made-up 0."""

    cpu_percent: float | None = None
    rss_bytes: int | None = None
    gpu_memory_bytes: int | None = None
    gpu_reason: str | None = None
    tokens_per_s: float | None = None
    slots_busy: int | None = None
    slots_total: int | None = None
    requests_served: int | None = None


@dataclass(frozen=True)
class ClusterProcess:
    """One of the cluster's processes (nginx is index 0), as recorded or as checked now."""

    index: int
    port: int
    pid: int | None = None
    # A ProcessStatus as recorded; `live_status` may also say what the health check answered.
    state: str = "stopped"
    exit_code: int | None = None
    log: Path | None = None
    detail: str = ""
    started: float | None = None  # wall-clock start, so the panel's uptime agrees everywhere
    figures: ClusterFigures | None = None  # filled by `with_latest_figures` only

    @classmethod
    def of_event(cls, event: ProcessState) -> ClusterProcess:
        return cls(
            event.index,
            event.port,
            event.pid,
            event.state,
            event.exit_code,
            event.log_path,
            event.detail,
            event.started,
        )

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index,
            "port": self.port,
            "pid": self.pid,
            "state": self.state,
            "exit_code": self.exit_code,
            "log": str(self.log) if self.log else None,
            "detail": self.detail,
            "started": self.started,
        }
        if self.figures is not None:
            entry.update(asdict(self.figures))
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ClusterProcess:
        log = entry.get("log")
        return cls(
            index=int(entry.get("index", 0)),
            port=int(entry["port"]),
            pid=entry.get("pid"),
            state=str(entry.get("state", "stopped")),
            exit_code=entry.get("exit_code"),
            log=Path(log) if log else None,
            detail=str(entry.get("detail") or ""),
            started=entry.get("started"),
        )


@dataclass(frozen=True)
class ClusterState:
    """What the supervisor records in its state file, and what the faces show of it."""

    supervisor_pid: int
    supervisor_started: float | None
    status: str  # "starting", "ready" or "failed"
    endpoint: str  # nginx's base URL; clients add /v1
    host: str
    api_key: str | None  # for the lab's own polls; never printed (see `status_json`)
    model: str
    instances_requested: int
    parallel: int
    balance: str
    nginx: ClusterProcess
    instances: tuple[ClusterProcess, ...]
    error: str | None = None
    history: tuple[Incident, ...] = ()  # what the supervisor healed, oldest first

    @property
    def ready(self) -> int:
        """How many of its llama-servers answer ready."""
        return sum(1 for i in self.instances if i.state == "ready")

    def to_json(self, *, public: bool = False) -> dict[str, Any]:
        """The state file's content; `public` leaves the API key out."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["nginx"] = self.nginx.to_json()
        data["instances"] = [i.to_json() for i in self.instances]
        data["history"] = [i.to_json() for i in self.history]
        if public:
            del data["api_key"]
        return data

    def process_states(self, *, stopped: bool = False) -> list[ProcessState]:
        """Its processes as the same events a run emits, so one panel shows both; `stopped`:
        as they are once the cluster has gone."""
        out = []
        roles: tuple[tuple[ProcessRole, tuple[ClusterProcess, ...]], ...] = (
            ("nginx", (self.nginx,)),
            ("server", self.instances),
        )
        for role, entries in roles:
            for entry in entries:
                if stopped:
                    out.append(
                        ProcessState(
                            role, entry.index, entry.port, entry.pid, "stopped", owner="cluster"
                        )
                    )
                    continue
                known = entry.state in get_args(ProcessStatus)
                out.append(
                    ProcessState(
                        role=role,
                        index=entry.index,
                        port=entry.port,
                        pid=entry.pid,
                        state=cast(ProcessStatus, entry.state) if known else "not answering",
                        exit_code=entry.exit_code,
                        log_path=entry.log,
                        detail=entry.detail,
                        owner="cluster",
                        url=http_url(self.host, entry.port),
                        started=entry.started,
                    )
                )
        return out

    @classmethod
    def from_json(cls, data: object) -> ClusterState:
        """Raises KeyError, TypeError or ValueError on content that is not a cluster's state."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        started = data.get("supervisor_started")
        return cls(
            supervisor_pid=int(data["supervisor_pid"]),
            supervisor_started=float(started) if started is not None else None,
            status=str(data["status"]),
            endpoint=str(data["endpoint"]),
            host=str(data["host"]),
            api_key=data.get("api_key"),
            model=str(data.get("model", "")),
            instances_requested=int(data.get("instances_requested", len(data["instances"]))),
            parallel=int(data.get("parallel", 0)),
            balance=str(data.get("balance", "")),
            nginx=ClusterProcess.from_json(data["nginx"]),
            instances=tuple(ClusterProcess.from_json(i) for i in data["instances"]),
            error=data.get("error"),
            history=tuple(Incident.from_json(i) for i in data.get("history", ())),
        )


def state_path() -> Path:
    return cluster_dir() / STATE_FILE


def read_state() -> ClusterState | None:
    try:
        return ClusterState.from_json(json.loads(state_path().read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"cluster state file unreadable: {state_path()} ({exc})") from None


def write_state(state: ClusterState) -> None:
    write_state_file(state_path(), state.to_json())


def supervisor_alive(state: ClusterState) -> bool:
    return alive_as_started(state.supervisor_pid, state.supervisor_started)


def running_state() -> ClusterState | None:
    """The state of a live standing cluster, clearing a stale file left by a killed supervisor."""
    state = read_state()
    if state is None:
        return None
    if supervisor_alive(state):
        return state
    with contextlib.suppress(FileNotFoundError):
        state_path().unlink()
    return None


async def serve(
    lab: LabConfig, layout: Layout, balance: Balance, liveness_timeout_s: float | None
) -> int:
    """The supervisor's body: start, record, heal until a stop signal, stop; its exit status."""
    run_dir = cluster_dir()
    me = psutil.Process()
    state = ClusterState(
        supervisor_pid=me.pid,
        supervisor_started=me.create_time(),
        status="starting",
        endpoint=http_url(lab.host, lab.nginx_port),
        host=lab.host,
        api_key=lab.api_key,
        model=str(lab.model),
        instances_requested=layout.instances,
        parallel=layout.parallel,
        balance=balance,
        nginx=ClusterProcess(0, lab.nginx_port),
        instances=tuple(ClusterProcess(i, lab.base_port + i) for i in range(layout.instances)),
    )
    write_state(state)

    def record(event: Event) -> None:
        nonlocal state
        if isinstance(event, ProcessState):
            entry = ClusterProcess.of_event(event)
            if event.role == "nginx":
                state = replace(state, nginx=entry)
            else:
                instances = list(state.instances)
                instances[event.index] = entry
                state = replace(state, instances=tuple(instances))
            write_state(state)

    def remember(incident: Incident) -> None:
        nonlocal state
        state = replace(state, history=(*state.history, incident)[-HISTORY_KEPT:])
        write_state(state)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    spec = ClusterSpec(layout, balance, max_concurrency=1024, failover=STANDING_FAILOVER)
    cluster = Cluster(lab, spec, run_dir, record)
    status = 0
    try:
        async with control_session() as session:
            await cluster.start(session)
            state = replace(state, status="ready")
            write_state(state)
            healer = Healer(cluster, session, liveness_timeout_s, remember)
            healing = asyncio.create_task(healer.run())
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({healing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                healing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await healing  # a healer's own error surfaces here, in the supervisor's log
    except LabError as exc:
        state = replace(state, status="failed", error=str(exc))
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
) -> ClusterState:
    """Launch the supervisor and wait until it reports ready or failed."""
    existing = running_state()
    if existing is not None:
        raise LabError(
            f"a cluster is already running at {existing.endpoint} "
            f"(supervisor pid {existing.supervisor_pid}); stop it with: llamalab cluster stop"
        )
    ensure_free(lab.host, required_ports(lab, instances, True))
    log_path = cluster_dir() / "supervisor.log"
    proc = spawn_detached(
        [sys.executable, "-m", "tui_lab.cli", "cluster", "serve", *serve_args], log_path
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state()
        if state and state.supervisor_pid == proc.pid:
            if state.status == "ready":
                return state
            if state.status == "failed":
                proc.wait(timeout=STOP_TIMEOUT_S)
                state_path().unlink(missing_ok=True)
                raise LabError(state.error or "cluster supervisor failed")
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(
                f"cluster supervisor exited with status {proc.returncode}: {' | '.join(tail)}"
            )
        time.sleep(0.2)
    proc.terminate()
    proc.wait(timeout=STOP_TIMEOUT_S)
    raise LabError(f"cluster not ready after {timeout_s:.0f} s; logs in {cluster_dir()}")


def stop_running() -> ClusterState | None:
    """Ask the supervisor to stop everything; force what is left after the timeout."""
    state = running_state()
    if state is None:
        return None
    pid = state.supervisor_pid
    if not terminate_and_wait(pid, state.supervisor_started, STOP_TIMEOUT_S):
        for entry in (state.nginx, *state.instances):
            if entry.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(entry.pid, signal.SIGKILL)
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


async def live_status() -> ClusterState | None:
    """The recorded state, with each process's state checked now rather than trusted."""
    state = running_state()
    if state is None:
        return None

    async def checked(entry: ClusterProcess) -> ClusterProcess:
        if not alive_as_started(entry.pid, None):
            now = "stopped" if entry.state == "stopped" else "crashed"
        else:
            now = await _probe(session, http_url(state.host, entry.port))
        return replace(entry, state=now)

    async with control_session() as session:
        nginx = await checked(state.nginx)
        instances = [await checked(entry) for entry in state.instances]
    return replace(state, nginx=nginx, instances=tuple(instances))


FIGURES_GAP_S = 1.0


def status_json(state: ClusterState | None) -> str:
    """What `cluster status --json` prints: the state less the API key (a terminal is often
    shared, and scrollback or logs keep what was printed)."""
    none: dict[str, Any] = {"endpoint": None, "nginx": None, "instances": []}
    return json.dumps(state.to_json(public=True) if state else none, indent=2)


async def with_latest_figures(state: ClusterState, gap_s: float = FIGURES_GAP_S) -> ClusterState:
    """The state with each instance's CPU, memory, GPU memory, tok/s and slots.

    Two telemetry rounds `gap_s` apart: CPU % and tok/s are rates over an interval, so the first
    round has none of them. A figure that cannot be read is None (the GPU's with its reason),
    never a made-up 0.
    """
    collector = TelemetryCollector(lambda _: None)
    try:
        for entry in state.instances:
            if entry.pid:
                url = http_url(state.host, entry.port)
                collector.watch(
                    Watched("server", entry.index, entry.pid, url, entry.log, state.api_key)
                )
        await collector.sample_once()
        await asyncio.sleep(gap_s)
        samples = await collector.sample_once()
    finally:
        collector.close()
    latest = {s.index: s for s in samples if isinstance(s, InstanceTelemetry)}

    def figures(sample: InstanceTelemetry | None) -> ClusterFigures:
        if sample is None:
            return ClusterFigures(gpu_reason=NOT_RUNNING_REASON)
        names = (f.name for f in fields(ClusterFigures))
        return ClusterFigures(**{name: getattr(sample, name) for name in names})

    instances = tuple(replace(i, figures=figures(latest.get(i.index))) for i in state.instances)
    return replace(state, instances=instances)
