"""Helpers the test modules share: one module, so no test file imports another.

Fixtures live in the conftest.py files; fakes of real parts in fake_gpus.py and
fake_llama_server.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Input, Static

from tui_lab.app import LabApp
from tui_lab.engine.events import InstanceTelemetry, MachineTelemetry
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.processes.cluster_health import Incident
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.processes.standing_cluster import ClusterProcess, ClusterState
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.screens.configure import CHECK_GROUP, ConfigureScreen
from tui_lab.widgets.instance_table import InstanceTable

# ---- the headless CLI, as a subprocess


def llamalab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui_lab.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
        check=False,
    )


def fake_cluster(
    url: str, lab: LabConfig, gpus_in_use: frozenset[int] | None = None
) -> SimpleNamespace:
    """What the runner's `_cluster_for` gives, over one fake server already answering: a ready
    instance for the liveness watch to find healthy and no proxy for the row to name."""
    instance = SimpleNamespace(
        index=0,
        port=int(url.rsplit(":", 1)[1]),
        url=url,
        hung=None,
        process=SimpleNamespace(running=True, stopping=False, ended=None),
    )
    return SimpleNamespace(
        url=url, instances=[instance], proxy=None, lab=lab, gpus_in_use=gpus_in_use
    )


def ports(lab: LabConfig) -> list[str]:
    return ["--base-port", str(lab.base_port), "--nginx-port", str(lab.nginx_port)]


def cluster_state(
    *history: Incident, supervisor_pid: int = 1, supervisor_started: float | None = None
) -> ClusterState:
    """A standing cluster of two instances as its state file records it."""
    return ClusterState(
        supervisor_pid=supervisor_pid,
        supervisor_started=supervisor_started,
        status="ready",
        endpoint="http://127.0.0.1:1",
        host="127.0.0.1",
        api_key=None,
        model="m.gguf",
        instances_requested=2,
        parallel=1,
        balance="round_robin",
        nginx=ClusterProcess(0, 1),
        instances=(ClusterProcess(0, 2), ClusterProcess(1, 3)),
        history=history,
    )


# ---- the real app on real servers


def settings(tmp_path: Path, **changes: str) -> RunSettings:
    base = free_port_block(9)
    values = {
        "kind": "test-concurrent",
        "instances": "2",
        "parallel": "2",
        "concurrency": "2",
        "n_predict": "8",
        "threads": "1",
        "base_port": str(base),
        "nginx_port": str(base + 8),
        "results": str(tmp_path / "results"),
    }
    values.update(changes)
    return RunSettings(**values)


async def wait_for(pilot: object, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.2)  # type: ignore[attr-defined]


def states(app: LabApp, owner: str) -> dict[str, str]:
    table = app.dashboard.query_one(InstanceTable)
    return {k: table.cell(k, "state") for k, i in table.rows_info.items() if i.state.owner == owner}


def six_cell_sweep(tmp_path: Path) -> RunSettings:
    """Long enough to act on mid-run: six cells on one small server."""
    return settings(
        tmp_path,
        kind="sweep-round-robin",
        instances="1",
        parallel="1",
        concurrency="1,2,3,4,5,6",
        requests="4",
    )


# ---- hand-made telemetry


def sample(index: int, pid: int, **changes: object) -> InstanceTelemetry:
    values: dict[str, object] = {
        "role": "server",
        "index": index,
        "pid": pid,
        "time": time.monotonic(),
        "alive": True,
        "cpu_percent": 150.0,
        "rss_bytes": 300 * 1024 * 1024,
        "threads": 12,
        "gpu_memory_bytes": None,
        "gpu_reason": "no NVIDIA GPU: NVML library not found",
        "slots_busy": 2,
        "slots_total": 4,
        "requests_processing": 2,
        "requests_deferred": 0,
        "tokens_predicted_total": 1234,
        "tokens_per_s": 87.5,
        "requests_served": 57,
        "answering": True,
    }
    values.update(changes)
    return InstanceTelemetry(**values)  # type: ignore[arg-type]


def machine_sample(time: float, tokens_per_s: float | None) -> MachineTelemetry:
    return MachineTelemetry(
        time, 10.0, 1 << 30, 8 << 30, 0, None, (), "no GPU", False, tokens_per_s
    )


# ---- the real app with its telemetry kept out

DATA = Path(__file__).resolve().parent / "data" / "results"


def quiet_app(results: Path = DATA) -> LabApp:
    app = LabApp(RunSettings(model="", results=str(results)), telemetry_interval_s=3600)

    async def no_telemetry() -> None:
        return None

    app.collector.run = no_telemetry  # type: ignore[method-assign]
    return app


# ---- the configure form

START = RunSettings(model="")  # blank model: no machine-specific path in snapshots


class Harness(App[None]):
    """Pushes the form and keeps what it was dismissed with."""

    def __init__(self, settings: RunSettings = START) -> None:
        super().__init__()
        self.settings = settings
        self.results: list[RunSettings | None] = []

    def on_mount(self) -> None:
        self.push_screen(ConfigureScreen(self.settings), callback=self.results.append)


def widget_text(pilot: Pilot[None], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector, Static).content)


async def settle(pilot: Pilot[None]) -> None:
    """Wait for the form's check: it runs in a worker once typing pauses."""
    await pilot.pause()
    for _ in range(200):
        if not any(w.group == CHECK_GROUP and not w.is_finished for w in pilot.app.workers):
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError("the form's check did not finish")


async def type_into(pilot: Pilot[None], field: str, text: str) -> None:
    """Focus a field as tab would clear it (start of line, delete to the end), type, and wait
    for the check."""
    pilot.app.screen.query_one(f"#{field}", Input).focus()
    await pilot.pause()
    await pilot.press("ctrl+a", "ctrl+k", *text)
    await settle(pilot)


# ---- small GGUF files


def write_model(path: Path, *, head_count_kv: object = 2, key_value: bool = False) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(4)
    writer.add_head_count(8)
    if isinstance(head_count_kv, list):
        writer.add_array("llama.attention.head_count_kv", head_count_kv)
    else:
        writer.add_head_count_kv(head_count_kv)
    writer.add_embedding_length(256)
    writer.add_context_length(2048)
    if key_value:
        writer.add_key_length(64)
        writer.add_value_length(48)
    writer.add_token_list([f"t{i}" for i in range(1000)])
    writer.add_tensor("a", np.zeros((64, 32), dtype=np.float32))
    writer.add_tensor("b", np.zeros(100, dtype=np.float16))
    writer.add_tensor(
        "c", np.zeros((1, 68), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
