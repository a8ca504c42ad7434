"""The adaptive sweep's driver: the search (engine/plan/search.py) picks the cells, PlanRunner
measures them.

So an adaptive run reuses servers, emits events and writes rows exactly as a full sweep does,
with more columns: `phase` (probe: one request per client; full: the grid's own cell),
`verdict` (why the search went on, or why it stopped raising that layout's concurrency or
abandoned it) and `eligible` (no failures, within the latency bounds: a full cell that is may be
the answer). A row's `cell` is the trial's number in the order the search ran it.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from tui_lab.engine.events import Notice, PlanRevised
from tui_lab.engine.load.stats import RunSummary
from tui_lab.engine.plan.config import Cell
from tui_lab.engine.plan.runs import Plan
from tui_lab.engine.plan.search import (
    Measurement,
    SearchResult,
    SearchSettings,
    Trial,
    describe,
    flaw,
    lanes,
    outlook,
    search,
)
from tui_lab.engine.sweeps.repeats import combine
from tui_lab.engine.sweeps.runner import Outcome, PlanRunner, row_error


class AdaptiveRunner(PlanRunner):
    """A PlanRunner whose cells are chosen one at a time by the search."""

    result: SearchResult | None = None
    _cells_total = 0

    @property
    def settings(self) -> SearchSettings:
        assert self.plan.search is not None
        return self.plan.search

    @property
    def cells_total(self) -> int:
        """Cells measured, and the most the search may still measure, as of its last outlook."""
        return self._cells_total

    async def run(self) -> Outcome:
        left = outlook(lanes(self.plan.cells), self.plan.cells, self.settings)
        self._cells_total = len(left)
        return await self.execute(sum(c.requests for c in left), self._search)

    def revise(self, cells: int, requests: int) -> None:
        """The rows there will be and the requests measured, at most, as of the search's last
        outlook: the progress bar's new totals."""
        self._cells_total = cells
        self.emit(PlanRevised(cells, requests))

    async def _search(self, session: aiohttp.ClientSession) -> None:
        self.result = await search(self.plan.cells, self.settings, _Bench(self, session))
        self.emit(Notice("info", self.verdict()))

    def verdict(self) -> str:
        """The answer in one line, for the CLI and the TUI."""
        if self.result is None:
            return "adaptive search: no answer (it did not finish)"
        best = self.result.best
        if best is None:
            return f"adaptive search: no best cell: {self.result.why_none}"
        p99 = best.result.e2el_p99_ms
        return (
            f"best: {describe(best.cell)} ({best.cell.layout.instances} instance(s) x "
            f"{best.cell.layout.parallel} slot(s), concurrency {best.cell.concurrency}): "
            f"{best.result.tok_per_s:.1f} tok/s "
            + (
                "over a full cell"
                if self.settings.repeats == 1
                else "as the mean of its full cells"
            )
            + (f", p99 latency {p99:.0f} ms" if p99 is not None else "")
        )


class _Bench:
    """The search's measurements, as PlanRunner cells: each row is written once the search
    has given its verdict on its cell, before the next cell starts; a finalist measured
    repeatedly gets one row, its measurements combined (sweeps/repeats.py)."""

    def __init__(self, runner: AdaptiveRunner, session: aiohttp.ClientSession) -> None:
        self.runner = runner
        self.session = session
        self._pending: dict[Cell, list[tuple[RunSummary | None, dict[str, object]]]] = {}
        self._requests_measured = 0  # a finalist's every measurement, its row not yet written

    async def measure(self, trial: Trial) -> Measurement:
        # The row number it will have: finalists are recorded in the order first measured.
        waiting = list(self._pending)
        place = waiting.index(trial.cell) if trial.cell in self._pending else len(waiting)
        index = len(self.runner.rows) + 1 + place
        summary, row = await self.runner.measure_cell(self.session, index, trial.cell)
        self._requests_measured += trial.cell.requests
        self._pending.setdefault(trial.cell, []).append((summary, row))
        return Measurement.of(summary, row_error(row))

    def record(self, trial: Trial, result: Measurement, verdict: str) -> None:
        measured = self._pending.pop(trial.cell)
        good = [(s, r) for s, r in measured if s is not None and not row_error(r)]
        summary, row = combine(good) if len(good) == len(measured) else measured[-1]
        index = len(self.runner.rows) + 1
        eligible = flaw(result, self.runner.settings) is None
        row.update(cell=index, phase=trial.phase, verdict=verdict, eligible=eligible)
        self.runner.finish_cell(index, trial.cell, summary, row, f"{trial.phase}: {verdict}")

    def note(self, text: str) -> None:
        self.runner.emit(Notice("info", text))

    def expect(self, cells: Sequence[Cell]) -> None:
        """Rows: those written, the finalists' still to come and any new cell among `cells`;
        requests: those measured and those of `cells`."""
        rows = len(self.runner.rows) + len(set(self._pending) | set(cells))
        self.runner.revise(rows, self._requests_measured + sum(c.requests for c in cells))


def runner_class(plan: Plan) -> type[PlanRunner]:
    """Who runs a plan: in order, or searched when the plan is an adaptive sweep's."""
    return PlanRunner if plan.search is None else AdaptiveRunner
