"""A lab that died without stopping its servers: the next start finds them and offers to stop.

The crash is staged as it happens where the kernel does not help (macOS, or a server that
ignores SIGTERM): a real lab process starts a real llama-server through `ManagedProcess`
without the parent-death signal, then is SIGKILLed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import llamalab
from tui_lab.app import LabApp
from tui_lab.engine.processes.leftovers import REGISTRY, find_leftovers
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.screens.choice_modal import ChoiceModal

pytestmark = pytest.mark.integration

CRASHING_LAB = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from tui_lab.engine.processes import process

    process._DIE_WITH_PARENT = None  # as on macOS
    process._WATCHDOG = sys.argv[5] == "watchdog"

    async def main():
        run_dir = Path(sys.argv[1])
        proc = process.ManagedProcess(
            "llama-server #0",
            [sys.argv[2], "-m", sys.argv[3], "--host", "127.0.0.1", "--port", sys.argv[4]],
            run_dir / "llama-server-0.log",
        )
        await proc.start()
        print(proc.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
    """
)


def crash_a_lab(run_dir: Path, server_bin: Path, model: Path, guard: str) -> psutil.Process:
    """Returns the llama-server the SIGKILLed lab started (no parent-death signal)."""
    run_dir.mkdir(parents=True)
    port = str(free_port_block(1))
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_LAB, run_dir, server_bin, model, port, guard],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == -9, out.stderr
    proc = psutil.Process(int(out.stdout))
    assert proc.name() == "llama-server"
    return proc


@pytest.fixture
def leftover(lab_home: Path, server_bin: Path, model: Path) -> Iterator[psutil.Process]:
    """What survives when even the watchdog could not help (it was killed, or is missing)."""
    proc = crash_a_lab(lab_home / "runs" / "20261125-000000-sweep-full-1", server_bin, model, "")
    yield proc
    if proc.is_running():
        proc.kill()


def test_without_the_kernels_help_the_watchdog_stops_the_server(
    lab_home: Path, server_bin: Path, model: Path
) -> None:
    """macOS has no PR_SET_PDEATHSIG: the watchdog notices the lab is gone and stops its child."""
    proc = crash_a_lab(lab_home / "runs" / "watched", server_bin, model, "watchdog")
    try:
        proc.wait(timeout=10)
    except psutil.TimeoutExpired:
        proc.kill()
        raise AssertionError("the watchdog did not stop the server within 10 s") from None
    assert find_leftovers() == []


def test_a_crashed_labs_server_is_found_and_a_live_owners_is_not(
    leftover: psutil.Process, lab_home: Path
) -> None:
    found = find_leftovers()
    assert [(f.pid, f.name) for f in found] == [(leftover.pid, "llama-server #0")]
    registry = found[0].run_dir / REGISTRY
    entry = json.loads(registry.read_text().splitlines()[0])
    # The same PID recorded with another start time is a reused PID, not our process; a
    # partial last line (the lab died mid-write) is skipped, not fatal.
    entry["started"] -= 10
    other = lab_home / "runs" / "other"
    other.mkdir()
    (other / REGISTRY).write_text(json.dumps(entry) + '\n{"pid": 12')
    # A record whose starter still runs (this test process) is that starter's business.
    mine = {**entry, "started": leftover.create_time(), "owner": psutil.Process().pid}
    mine["owner_started"] = psutil.Process().create_time()
    (lab_home / "runs" / "live").mkdir()
    (lab_home / "runs" / "live" / REGISTRY).write_text(json.dumps(mine) + "\n")
    assert [f.pid for f in find_leftovers()] == [leftover.pid]


def test_cli_cleanup_lists_then_stops_them(leftover: psutil.Process) -> None:
    listed = llamalab("cleanup", "--dry-run")
    assert listed.returncode == 0 and f"pid {leftover.pid}" in listed.stdout
    assert leftover.is_running()
    stopped = llamalab("cleanup")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopping: llama-server #0 (pid {leftover.pid}" in stopped.stdout
    leftover.wait(5)
    assert "nothing left running" in llamalab("cleanup").stdout


async def test_tui_start_offers_to_stop_them(leftover: psutil.Process, tmp_path: Path) -> None:
    app = LabApp(RunSettings(results=str(tmp_path / "results")))
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            if isinstance(app.screen, ChoiceModal):
                break
        assert isinstance(app.screen, ChoiceModal)
        assert any(f"pid {leftover.pid}" in line for line in app.screen.lines)
        await pilot.click("#stop")

        def told() -> bool:
            return any("stopped 1 leftover" in n.message for n in app._notifications)

        for _ in range(150):
            await pilot.pause(0.1)
            if told():
                break
        assert told() and not leftover.is_running()
