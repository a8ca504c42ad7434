"""Faults injected into a real sweep (real llama-server, nginx and HTTP): a server frozen mid-cell,
nginx killed mid-cell. Each test checks what the user is shown (the CLI's progress lines, the
row), that every finished row is on disk, and (the autouse fixture) that nothing is left running.
A server that crashes is test_instance_crash_real.py's; a full disk, test_disk_full_real.py's.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.helpers import ports
from tui_lab.cli.progress import ProgressPrinter
from tui_lab.engine.events import CellFinished, Event, InstanceHung, ProcessState, RequestDone
from tui_lab.engine.plan.config import LabConfig, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, full_sweep
from tui_lab.engine.processes.cluster import Cluster
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.sweeps.runner import WARMUP_N_PREDICT, Outcome, PlanRunner

pytestmark = pytest.mark.integration

# Small cells on shared cores: 2 instances x 1 slot, 4 then 2 clients, 8 tokens a request.
LOAD = LoadSettings(n_predict=8, requests=16)  # the default request timeout: 600 s
PLAN = full_sweep([2], [1], [4, 2], LOAD, ServerOptions(threads=1))


class Sweep:
    """The two-cell sweep, with `fault` done to its cluster once 3 requests of cell 1 are done;
    every event kept, and the CLI's progress printed into `out`."""

    def __init__(self, lab: LabConfig, tmp_path: Path, fault: Callable[[Cluster], int]) -> None:
        self.lab, self.tmp_path, self.fault = lab, tmp_path, fault
        self.events: list[tuple[float, Event]] = []
        self.out = io.StringIO()
        self.printer = ProgressPrinter(self.out)
        self.victim: int | None = None  # the pid the fault was done to
        self.fault_at = 0.0
        self.runner: PlanRunner | None = None

    def emit(self, event: Event) -> None:
        self.events.append((time.monotonic(), event))
        self.printer.handle(event)
        done = sum(isinstance(e, RequestDone) and e.cell == 1 for _, e in self.events)
        if self.victim is None and done == 3:
            assert self.runner is not None and self.runner.cluster is not None
            self.victim = self.fault(self.runner.cluster)
            self.fault_at = time.monotonic()

    async def run(self) -> tuple[Outcome, Path]:
        with ResultsWriter(self.lab.results_dir, PLAN.run, {"run": PLAN.run}, {}) as writer:
            self.runner = PlanRunner(PLAN, self.lab, LOAD, self.emit, self.tmp_path / "run", writer)
            outcome = await self.runner.run()
        return outcome, writer.jsonl_path

    def of(self, kind: type[Event]) -> list[tuple[float, Event]]:
        return [(t, e) for t, e in self.events if isinstance(e, kind)]


def ready_pids(sweep: Sweep, role: str, index: int) -> list[int | None]:
    """The processes that said ready in that place, in order: one per (re)start."""
    return [
        e.pid
        for _, e in sweep.of(ProcessState)
        if (e.role, e.index, e.state) == (role, index, "ready")  # type: ignore[attr-defined]
    ]


async def test_a_frozen_instance_ends_its_cell_within_30_s_and_is_replaced(
    lab: LabConfig, tmp_path: Path
) -> None:
    """SIGSTOP one of two servers mid-cell: with the default 600 s request timeout, the lab
    declares it hung after the 10 s liveness timeout and kills it; its requests fail then, the
    rest of the cell goes to the other server, the row names the instance, and the next cell
    runs clean with that server restarted in place."""

    def freeze(cluster: Cluster) -> int:
        pid = cluster.instances[1].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        return pid

    sweep = Sweep(lab, tmp_path, freeze)
    try:
        outcome, jsonl = await sweep.run()
    finally:
        if sweep.victim is not None:  # a failed test must not leave a frozen server behind
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(sweep.victim, sig)
                except ProcessLookupError:
                    break

    assert sweep.victim is not None
    ((hung_at, hung),) = sweep.of(InstanceHung)
    assert isinstance(hung, InstanceHung)
    assert (hung.index, hung.pid) == (1, sweep.victim)
    port = lab.base_port + 1
    assert hung.port == port and 10 <= hung.silent_s < 20
    cell_1_end = next(t for t, e in sweep.of(CellFinished) if e.index == 1)  # type: ignore[attr-defined]
    assert cell_1_end - sweep.fault_at < 30, "the cell waited on its frozen server"
    assert hung_at - sweep.fault_at < 15
    gone = [e for _, e in sweep.of(ProcessState) if e.pid == sweep.victim and e.state == "hung"]
    assert len(gone) == 1, "the frozen server was not killed"
    # The next cell's servers: the frozen one restarted in place, the other one kept.
    first_pid, restarted = ready_pids(sweep, "server", 1)
    assert first_pid == sweep.victim != restarted
    assert len(ready_pids(sweep, "server", 0)) == 1

    first, second = read_rows(jsonl)
    assert (first, second) == outcome.rows, "a finished row is missing on disk"
    assert str(first["error"]).startswith("instance 1 hung at +")
    assert f"(port {port})" in str(first["error"])
    # What was on the frozen server failed (at most the 4 clients' requests), counted by kind.
    assert first["requests_ok"] + first["requests_failed"] == 16
    assert 0 < first["requests_failed"] <= 4 and first["errors"]
    assert second["error"] is None and second["requests_ok"] == 16

    printed = sweep.out.getvalue()
    assert f"llama-server #1 (port {port}) hung: no answer to /health for" in printed
    assert "cell 1/2 done:" in printed and "; instance 1 hung at +" in printed
    assert "cell 2/2 done:" in printed and ", 16 ok, 0 failed\n" in printed


async def test_nginx_killed_mid_cell_is_named_in_its_row_and_the_next_cell_runs(
    lab: LabConfig, tmp_path: Path
) -> None:
    """SIGKILL nginx's processes mid-cell (its master alone would leave its worker serving):
    the cell's rest fails fast, its row names nginx, and the next cell gets a fresh nginx in
    front of the same servers and runs clean."""

    def kill_nginx(cluster: Cluster) -> int:
        assert cluster.proxy is not None and cluster.proxy.process.pid is not None
        pid = cluster.proxy.process.pid
        os.killpg(pid, signal.SIGKILL)
        return pid

    sweep = Sweep(lab, tmp_path, kill_nginx)
    outcome, jsonl = await sweep.run()

    crashed = [e for _, e in sweep.of(ProcessState) if e.state == "crashed"]
    assert [(e.role, e.pid) for e in crashed] == [("nginx", sweep.victim)]  # type: ignore[attr-defined]
    assert len(ready_pids(sweep, "nginx", 0)) == 2  # a fresh nginx, the same servers
    assert len(ready_pids(sweep, "server", 0)) == len(ready_pids(sweep, "server", 1)) == 1
    first, second = read_rows(jsonl)
    assert (first, second) == outcome.rows, "a finished row is missing on disk"
    assert str(first["error"]).startswith("nginx crashed at +")
    assert f"(port {lab.nginx_port}, exit -9)" in str(first["error"])
    assert first["requests_failed"] > 0 and "connection" in str(first["errors"])
    assert second["error"] is None and second["requests_ok"] == 16

    printed = sweep.out.getvalue()
    assert "nginx #0 crashed: exit status -9" in printed
    assert "; nginx crashed at +" in printed
    assert "cell 2/2 done:" in printed and ", 16 ok, 0 failed\n" in printed


def serving(port: int) -> bool:
    """Whether the server on `port` has finished a measured request (beyond its warm-up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1]) > WARMUP_N_PREDICT
    return False


def server_on(parent: int, port: int) -> psutil.Process:
    for child in psutil.Process(parent).children(recursive=True):
        with_port = child.cmdline()
        if "--port" in with_port and with_port[with_port.index("--port") + 1] == str(port):
            return child
    raise AssertionError(f"no llama-server on port {port}")


def test_stop_on_error_ends_the_sweep_at_a_hung_instance_keeping_its_row(
    lab: LabConfig,
) -> None:
    """The CLI as a user runs it, `--stop-on-error --liveness-timeout 3`: the hung line, the
    cell's line naming the instance, then the one error line and a non-zero exit; the cell's
    row is written, no later cell runs, and its servers are stopped."""
    port = lab.base_port + 1
    sweep = subprocess.Popen(
        [
            sys.executable, "-m", "tui_lab.cli", "sweep", "full",
            "--instances", "2", "--parallel", "1", "--threads", "1",
            "--concurrency", "4,2", "--n-predict", "8", "--requests", "16",
            "--stop-on-error", "--liveness-timeout", "3",
            "--results", str(lab.results_dir), *ports(lab),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    victim: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 180
        while not serving(port):
            assert sweep.poll() is None, sweep.communicate()
            assert time.monotonic() < deadline, "cell 1 never reached its second server"
            time.sleep(0.1)
        victim = server_on(sweep.pid, port)
        victim.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        out, err = sweep.communicate(timeout=120)
        took = time.monotonic() - frozen
    finally:
        if sweep.poll() is None:
            sweep.kill()
        if victim is not None and victim.is_running():
            victim.send_signal(signal.SIGCONT)
    assert sweep.returncode == 2, err
    assert took < 30
    # The progress lines and the error are on stderr (stdout is for tables); one line each.
    assert f"llama-server #1 (port {port}) hung: no answer to /health for 3 s; killed it" in err
    assert "cell 1/2 done:" in err and "; instance 1 hung at +" in err
    assert "cell 2/2" not in err and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("llamalab: cell 1/2: instance 1 hung at +")
    assert last.endswith(f"(port {port}); stopped (--stop-on-error)")
    assert out == ""
    (jsonl,) = lab.results_dir.glob("*.jsonl")
    (row,) = read_rows(jsonl)
    assert str(row["error"]).startswith("instance 1 hung at +") and row["cell"] == 1
