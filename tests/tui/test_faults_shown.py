"""What the real app shows of a fault: a hung server (hand-made engine events through the
bridge), and a results disk that fails (a real ENOSPC, from /dev/full)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import quiet_app, settings, states, wait_for
from tui_lab.app import LabApp
from tui_lab.engine.events import InstanceHung, ProcessState
from tui_lab.engine.plan.config import Cell
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.sweeps.runner import PlanRunner, cell_row


def messages(app: LabApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_a_hung_server_is_marked_hung_and_told_at_once() -> None:
    app = quiet_app()
    async with app.run_test(size=(120, 40)) as pilot:
        app.emit(ProcessState("server", 1, 8101, 4242, "ready", started=time.time()))
        await pilot.pause(0.2)
        now = time.time()
        app.emit(InstanceHung(1, 8101, 4242, silent_since=now - 11.4, at=now))
        await pilot.pause(0.2)
        assert states(app, "run") == {"run-server-1": "hung"}
        told = "llama-server #1 (port 8101) hung: no answer to /health for 11 s; killed it"
        assert told in messages(app)
        # Its exit follows; the row stays hung, with no figures of a process that is gone.
        app.emit(ProcessState("server", 1, 8101, 4242, "hung", exit_code=-9, detail=told))
        await pilot.pause(0.2)
        assert states(app, "run") == {"run-server-1": "hung"}
        assert messages(app).count(told) == 1


async def test_a_results_disk_error_is_one_line_in_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first row's write meets a full disk: the app says the writer's one line (the path,
    the reason, how to resume) and goes on; no traceback, no crashed app."""
    real_open = ResultsWriter._open

    def onto_a_full_disk(self: ResultsWriter, mode: str, columns: tuple[str, ...] | None) -> None:
        real_open(self, mode, columns)  # type: ignore[arg-type]
        self._jsonl_file.close()
        self._jsonl_file = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115

    async def measured(
        runner: PlanRunner, _session: object, index: int, cell: Cell
    ) -> tuple[None, dict[str, object]]:
        return None, cell_row(runner.plan, index, cell, None, None, None)  # no server started

    monkeypatch.setattr(ResultsWriter, "_open", onto_a_full_disk)
    monkeypatch.setattr(PlanRunner, "measure_cell", measured)
    app = LabApp(settings(tmp_path), telemetry_interval_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: any("cannot write" in m for m in messages(app)), 30)
        (line,) = [m for m in messages(app) if "cannot write" in m]
        assert "\n" not in line and "Traceback" not in line
        assert line.startswith(f"cannot write the results to {tmp_path / 'results'}/")
        assert "No space left on device" in line and "llamalab sweep resume" in line
        await wait_for(pilot, lambda: not app.run_active, 10)
        assert app.is_running
        await pilot.press("q")
