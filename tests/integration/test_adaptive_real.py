"""`llamalab sweep adaptive` as a user runs it: real llama-server instances, real nginx, real
HTTP; the search finishes, writes a row per trial as it goes and reports its best cell."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.events import CellFinished, Event, PlanRevised
from tui_lab.engine.plan.config import LabConfig, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, adaptive_sweep, full_sweep
from tui_lab.engine.plan.search import SearchSettings
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.sweeps.adaptive import AdaptiveRunner
from tui_lab.engine.sweeps.progress import ProgressTracker

pytestmark = pytest.mark.integration


def run_cli(
    lab: LabConfig, results: Path, *flags: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Run `llamalab sweep adaptive` to the end: its results file and what it printed."""
    out = llamalab(
        "sweep", "adaptive", "--threads", "1", "--results", str(results), *ports(lab), *flags
    )
    assert out.returncode == 0, out.stderr
    (jsonl,) = results.glob("sweep-adaptive-*.jsonl")
    return jsonl, out


def test_adaptive_sweep_finishes_writes_rows_and_reports_the_best_cell(
    lab: LabConfig, tmp_path: Path
) -> None:
    jsonl, out = run_cli(
        lab,
        tmp_path / "res",
        *("--instances", "1,2", "--parallel", "1,2", "--concurrency", "1,2,4"),
        *("--n-predict", "12", "--finalists", "1"),
    )
    rows = read_rows(jsonl)
    assert [r["cell"] for r in rows] == list(range(1, len(rows) + 1))
    assert {r["phase"] for r in rows} == {"probe", "full"}
    for row in rows:
        assert row["error"] is None and row["requests_failed"] == 0
        assert row["output_tokens"] == row["server_output_tokens"] == row["requests_ok"] * 12
        assert row["verdict"] and row["eligible"] is True
        per_client = 1 if row["phase"] == "probe" else 2
        assert row["requests"] == per_client * row["concurrency"]
    # Each layout's ladder ends with a reason; the full cell is the best probe's.
    layouts = {(r["instances"], r["parallel"]) for r in rows if r["phase"] == "probe"}
    assert len(layouts) == 4
    assert any("stop raising" in r["verdict"] or "end of" in r["verdict"] for r in rows)
    (full,) = [r for r in rows if r["phase"] == "full"]
    assert full["verdict"].startswith("finalist: probe #1 (")
    best = f"best: {full['instances']}x{full['parallel']} c={full['concurrency']} "
    assert best in out.stdout
    assert f"{full['output_tok_per_s']:.1f} tok/s over a full cell" in out.stdout
    assert "finalists: " in out.stderr and "-- probe: first step" in out.stderr
    assert len(rows) <= 4 * 3 + 1, "more trials than the grid's cells plus the finalist"


def test_a_resumed_adaptive_sweep_is_refused_before_anything_starts(
    lab: LabConfig, tmp_path: Path
) -> None:
    jsonl, _ = run_cli(
        lab,
        tmp_path / "res",
        *("--instances", "1", "--parallel", "1", "--concurrency", "1"),
        *("--n-predict", "8"),
    )
    again = llamalab("sweep", "resume", str(jsonl))
    assert again.returncode == 2
    assert "an adaptive sweep is started again, not resumed" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


async def test_progress_of_an_adaptive_sweep_ends_at_its_revised_totals(
    lab: LabConfig, tmp_path: Path
) -> None:
    """The first totals allow for probing every cell; each stopped ladder revises them, so the
    bar ends full when the search does rather than stopping part-way."""
    load = LoadSettings(n_predict=8)
    grid = full_sweep([1], [1, 2], [1, 2, 4, 8], load, ServerOptions(threads=1))
    plan = adaptive_sweep(SearchSettings(plateau=0.5, finalists=1), grid)
    events: list[Event] = []
    tracker = ProgressTracker()

    def emit(event: Event) -> None:
        events.append(event)
        tracker.apply(event)

    outcome = await AdaptiveRunner(plan, lab, load, emit, tmp_path / "run", None).run()
    revised = [e for e in events if isinstance(e, PlanRevised)]
    assert len(revised) == 3  # two ladders, then the finalist
    assert revised[-1].requests < revised[0].requests
    assert tracker.cells_done == tracker.cells_total == len(outcome.rows)
    assert (
        tracker.requests_done == tracker.requests_total == sum(r["requests"] for r in outcome.rows)
    )
    assert tracker.fraction == 1.0
    finished = [e for e in events if isinstance(e, CellFinished)]
    assert finished[-1].index == finished[-1].total == len(outcome.rows)
