"""One llama-server killed with SIGKILL in the middle of a sweep, as an OOM kill would do it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tui_lab.engine.events import Event, ProcessState, RequestDone
from tui_lab.engine.plan.config import LabConfig, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, full_sweep
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.sweeps.runner import PlanRunner

pytestmark = pytest.mark.integration


async def test_sweep_goes_on_when_an_instance_is_killed(lab: LabConfig, tmp_path: Path) -> None:
    """The instance shows crashed with its exit status and log; nginx sends the rest of the
    cell to the survivor; that cell's row names the instance and counts what failed by kind;
    the next cell runs clean on the instance restarted in place."""
    load = LoadSettings(n_predict=32, requests=24, stream=True)
    plan = full_sweep([2], [2], [4, 2], load, ServerOptions(threads=1))
    events: list[Event] = []
    killed: list[int] = []

    def emit(event: Event) -> None:
        events.append(event)
        done = sum(isinstance(e, RequestDone) for e in events)
        if isinstance(event, RequestDone) and done == 3 and runner.cluster is not None:
            victim = runner.cluster.instances[1]
            assert victim.pid is not None
            killed.append(victim.pid)
            os.kill(victim.pid, signal.SIGKILL)

    with ResultsWriter(lab.results_dir, plan.run, {"run": plan.run}, {}) as writer:
        runner = PlanRunner(plan, lab, load, emit, tmp_path / "run", writer)
        outcome = await runner.run()

    crashed = [e for e in events if isinstance(e, ProcessState) and e.state == "crashed"]
    assert [(e.index, e.pid) for e in crashed] == [(1, killed[0])]
    assert "exit status -9" in crashed[0].detail and "last log lines:" in crashed[0].detail

    first, second = read_rows(writer.jsonl_path)
    assert first == outcome.rows[0]
    assert str(first["error"]).startswith("instance 1 crashed at +")
    assert f"(port {lab.base_port + 1}, exit -9)" in str(first["error"])
    assert first["requests_ok"] + first["requests_failed"] == 24
    # Only what was in flight on the killed instance can fail (round robin may have queued
    # more than its 2 slots there, never more than the 4 clients); nginx routes the rest of
    # the cell to the survivor.
    assert first["requests_failed"] <= 4
    failed_kinds = dict(kv.split(":") for kv in str(first["errors"] or "").split(";") if kv)
    assert sum(int(n) for n in failed_kinds.values()) == first["requests_failed"]
    assert second["requests_ok"] == 24 and second["requests_failed"] == 0
    assert second["server_output_tokens"] == second["output_tokens"]
