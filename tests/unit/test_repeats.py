"""Repeats: cells measured in interleaved passes, one row per cell with each measurement, the
mean and the 95 % interval; the row of a failing cell written at its failure."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tui_lab.engine.events import CellFinished, Event, Notice, PlanRevised
from tui_lab.engine.load.stats import Percentiles, RunSummary, summarize
from tui_lab.engine.plan.config import Cell, LabConfig, LoadSettings
from tui_lab.engine.plan.passes import interleaved, server_starts
from tui_lab.engine.plan.runs import Plan, ServerOptions, adaptive_sweep, full_sweep
from tui_lab.engine.plan.search import SearchSettings
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.results.ranking import marks
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.run_settings import RunSettings, build_plan
from tui_lab.engine.sweeps.adaptive import AdaptiveRunner
from tui_lab.engine.sweeps.repeats import combine, mean_summary
from tui_lab.engine.sweeps.resume import load as load_resumption
from tui_lab.engine.sweeps.resume import recorded_config
from tui_lab.engine.sweeps.runner import PlanRunner, cell_row

LOAD = LoadSettings(n_predict=8, requests_per_client=1)


def plan_of(repeats: int) -> Plan:
    """Four cells on two layouts (1 and 2 instances, concurrency 1 and 2)."""
    return replace(full_sweep((1, 2), (1,), (1, 2), LOAD, ServerOptions()), repeats=repeats)


def summary(tok_per_s: float, p99: float = 100.0) -> RunSummary:
    base = summarize([], 1.0)
    return replace(
        base,
        requests_ok=2,
        output_tokens=16,
        output_tok_per_s=tok_per_s,
        e2el_ms=Percentiles(p99 / 2, p99 * 0.9, p99, p99 / 2),
    )


def test_passes_interleave_the_cells_serpentine() -> None:
    cells = list(enumerate(plan_of(3).cells, 1))
    order = [(number, index) for number, index, _ in interleaved(cells, 3)]
    assert order == [
        (1, 1), (1, 2), (1, 3), (1, 4),
        (2, 4), (2, 3), (2, 2), (2, 1),
        (3, 1), (3, 2), (3, 3), (3, 4),
    ]  # fmt: skip


def test_serpentine_passes_reuse_the_layout_that_ends_a_pass() -> None:
    plan = plan_of(3)
    assert server_starts(plan.cells) == 2
    # 2 layouts, 3 passes: 1,2 | 2,1 | 1,2 -- the servers start 4 times, not 6
    assert server_starts(plan.cells, 3) == 4


class Scripted(PlanRunner):
    """Measurements of a scripted tok/s (cell index x 10 + the pass), no servers: the loop
    around them is what is under test."""

    order: list[int]
    fail: tuple[int, int] | None = None  # (cell, its measurement that fails)

    async def measure_cell(  # type: ignore[override]
        self, session: object, index: int, cell: Cell
    ) -> tuple[RunSummary | None, dict[str, object]]:
        self.order.append(index)
        taken = self.order.count(index)
        if self.fail == (index, taken):
            return None, cell_row(self.plan, index, cell, None, None, "server crashed")
        measured = summary(index * 10 + taken, p99=100.0 * taken)
        return measured, cell_row(self.plan, index, cell, measured, [8], None)


def runner(
    tmp_path: Path,
    repeats: int,
    writer: ResultsWriter | None = None,
    plan: Plan | None = None,
    kind: type[Scripted] = Scripted,
) -> Scripted:
    base = free_port_block(4)
    lab = LabConfig(
        server_bin=tmp_path / "none",
        model=tmp_path / "none.gguf",
        nginx_bin=tmp_path / "nginx",
        base_port=base,
        nginx_port=base + 3,
    )
    events: list[Event] = []
    scripted = kind(plan or plan_of(repeats), lab, LOAD, events.append, tmp_path, writer)
    scripted.order = []
    scripted.events = events  # type: ignore[attr-defined]
    return scripted


async def test_each_cell_is_one_row_with_its_runs_mean_and_interval(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "results", "sweep-full", {}, {})
    scripted = runner(tmp_path, 3, writer)
    outcome = await scripted.run()
    writer.close()
    assert scripted.order == [1, 2, 3, 4, 4, 3, 2, 1, 1, 2, 3, 4]
    assert [r["cell"] for r in outcome.rows] == [1, 2, 3, 4]  # written with the last pass
    first = outcome.rows[0]
    assert first["repeats"] == 3
    assert first["output_tok_per_s_runs"] == [11.0, 12.0, 13.0]
    assert first["output_tok_per_s"] == pytest.approx(12.0)
    # s = 1, t(2) = 4.302653: 12 ± 4.302653 / sqrt(3)
    assert first["output_tok_per_s_ci_low"] == pytest.approx(12 - 2.48414, abs=1e-4)
    assert first["output_tok_per_s_ci_high"] == pytest.approx(12 + 2.48414, abs=1e-4)
    assert first["e2el_ms_p99"] == pytest.approx(200.0)  # the mean of 100, 200, 300
    assert first["requests_ok"] == 6 and first["server_output_tokens"] == 24
    for written in (writer.jsonl_path, writer.csv_path):  # the CSV keeps the list as JSON
        assert read_rows(written)[0]["output_tok_per_s_runs"] == [11.0, 12.0, 13.0]
    events = scripted.events  # type: ignore[attr-defined]
    passes = [e.text for e in events if isinstance(e, Notice)]
    assert passes == ["pass 1 of 3", "pass 2 of 3", "pass 3 of 3"]
    notes = [e.note for e in events if isinstance(e, CellFinished)]
    assert notes[0] == "mean of 3, 95% CI 9.5..14.5 tok/s"


async def test_a_cell_that_fails_once_is_written_failed_and_measured_no_more(
    tmp_path: Path,
) -> None:
    scripted = runner(tmp_path, 3)
    scripted.fail = (2, 2)  # cell 2 fails in the second pass
    outcome = await scripted.run()
    assert scripted.order == [1, 2, 3, 4, 4, 3, 2, 1, 1, 3, 4]
    by_cell = {r["cell"]: r for r in outcome.rows}
    assert by_cell[2]["error"] == "server crashed" and by_cell[2]["repeats"] == 0
    assert by_cell[1]["repeats"] == 3 and outcome.cells_failed == 1


async def test_one_repeat_is_the_single_measurement_with_no_interval(tmp_path: Path) -> None:
    outcome = await runner(tmp_path, 1).run()
    row = outcome.rows[0]
    assert (row["repeats"], row["output_tok_per_s_runs"]) == (1, [11.0])
    assert (row["output_tok_per_s_ci_low"], row["output_tok_per_s_ci_high"]) == (None, None)


def test_combined_rows_sum_counts_tokens_and_energy() -> None:
    plan = plan_of(2)
    cell = plan.cells[0]
    rows = []
    for tok, joules in ((10.0, 2.0), (14.0, 4.0)):
        measured = summary(tok)
        row = cell_row(plan, 1, cell, measured, [8, 4], None)
        row.update(energy_j=joules, joules_per_token=joules / 16, energy_reason=None)
        rows.append((measured, row))
    combined, row = combine(rows)
    assert combined == mean_summary([s for s, _ in rows])
    assert row["output_tok_per_s"] == pytest.approx(12.0)
    assert row["instance_output_tokens"] == "16;8" and row["server_output_tokens"] == 24
    assert row["energy_j"] == pytest.approx(6.0)
    assert row["joules_per_token"] == pytest.approx(6.0 / 32)
    rows[1][1].update(energy_j=None, joules_per_token=None, energy_reason="no GPU")
    assert combine(rows)[1]["energy_reason"] == "no GPU"


async def test_resume_after_an_interrupted_repeat_measures_the_unwritten_cells_again(
    tmp_path: Path,
) -> None:
    """Rows are whole cells: a sweep cut short after two cells are written resumes the other
    two, all their passes, into the same files."""
    settings = RunSettings(
        kind="sweep-full", instances="1,2", parallel="1", concurrency="1,2", repeats="3"
    )
    scripted = runner(tmp_path, 3, plan=build_plan(settings))
    config = recorded_config(settings, scripted.plan, scripted.lab)
    writer = ResultsWriter(tmp_path / "results", "sweep-full", config, {})
    rows = (await scripted.run()).rows
    for row in rows[:2]:
        writer.write(row)
    writer.close()
    resumption = load_resumption(writer.jsonl_path)
    assert resumption.plan.repeats == 3
    assert resumption.todo == [3, 4]


class ScriptedAdaptive(Scripted, AdaptiveRunner):
    """The adaptive search's driver over scripted measurements: tok/s by (instances,
    concurrency), each further measurement of a cell a little off."""

    started: list[int]  # the row number each measurement was started as

    async def measure_cell(  # type: ignore[override]
        self, session: object, index: int, cell: Cell
    ) -> tuple[RunSummary | None, dict[str, object]]:
        self.started.append(index)
        taken = self.order.count((cell.layout.instances, cell.concurrency))
        self.order.append((cell.layout.instances, cell.concurrency))  # type: ignore[arg-type]
        tok = {(1, 1): 10.0, (1, 2): 20.0, (2, 1): 30.0, (2, 2): 31.0}[
            (cell.layout.instances, cell.concurrency)
        ] + (0.0, -0.3, 0.3)[taken % 3]
        measured = summary(tok)
        return measured, cell_row(self.plan, index, cell, measured, [8], None)


async def test_adaptive_finalists_measured_repeatedly_are_one_row_each(tmp_path: Path) -> None:
    grid = plan_of(1)
    plan = adaptive_sweep(SearchSettings(plateau=0.0, finalists=2, repeats=3), grid)
    scripted = runner(tmp_path, 1, plan=plan, kind=ScriptedAdaptive)
    assert isinstance(scripted, ScriptedAdaptive)
    scripted.started = []
    outcome = await scripted.run()
    phases = [(r["phase"], r["instances"], r["concurrency"], r["repeats"]) for r in outcome.rows]
    # a probe at full length is a probe when finalists are repeated; 30 and 31 tie to the end
    assert phases == [
        ("probe", 1, 1, 1), ("probe", 1, 2, 1), ("probe", 2, 1, 1), ("probe", 2, 2, 1),
        ("full", 2, 2, 3), ("full", 2, 1, 3),
    ]  # fmt: skip
    assert [r["cell"] for r in outcome.rows] == [1, 2, 3, 4, 5, 6]
    # each measurement of a finalist is shown (CellStarted) as the row it will be
    assert scripted.started == [1, 2, 3, 4, 5, 6, 5, 6, 5, 6]
    assert outcome.rows[4]["output_tok_per_s_runs"] == [30.7, 31.3, 31.0]
    assert outcome.rows[4]["output_tok_per_s"] == pytest.approx(31.0)
    assert marks(outcome.rows) == ["", "", "", "", "best", "tie"]
    # The progress bar's last totals are what was measured: six rows, and the requests of
    # every measurement (one per client: the four probes, then each finalist three times).
    revised = [e for e in scripted.events if isinstance(e, PlanRevised)]  # type: ignore[attr-defined]
    assert (revised[-1].cells, revised[-1].requests) == (6, (1 + 2 + 1 + 2) + 3 * 2 + 3 * 1)
