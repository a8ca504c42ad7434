"""The adaptive sweep's driver: the search (engine/search.py) picks the cells, PlanRunner
measures them.

So an adaptive run reuses servers, emits events and writes rows exactly as a full sweep does,
with more columns: `phase` (probe: one request per client; full: the grid's own cell),
`verdict` (why the search went on, or why it stopped raising that layout's concurrency or
abandoned it) and `eligible` (no failures, within the latency bounds: a full cell that is may be
the answer). A row's `cell` is the trial's number in the order the search ran it.
"""

from __future__ import annotations

import aiohttp

from tui_lab.engine.events import Notice
from tui_lab.engine.runs import Plan
from tui_lab.engine.search import (
    Measurement,
    SearchResult,
    SearchSettings,
    Trial,
    describe,
    flaw,
    probe_of,
    search,
)
from tui_lab.engine.stats import RunSummary
from tui_lab.engine.sweep import Outcome, PlanRunner, row_error


class AdaptiveRunner(PlanRunner):
    """A PlanRunner whose cells are chosen one at a time by the search."""

    result: SearchResult | None = None

    @property
    def settings(self) -> SearchSettings:
        assert self.plan.search is not None
        return self.plan.search

    @property
    def cells_total(self) -> int:
        """Every cell probed and confirmed in full (when latency bounds keep breaking): an upper
        bound the search stays far under when layouts plateau early."""
        return 2 * len(self.plan.cells)

    async def run(self) -> Outcome:
        cells = self.plan.cells
        biggest = sorted((c.requests for c in cells), reverse=True)[: self.settings.finalists]
        requests = sum(probe_of(c).requests for c in cells) + sum(biggest)
        return await self.execute(requests, self._search)

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
            f"{best.result.tok_per_s:.1f} tok/s over a full cell"
            + (f", p99 latency {p99:.0f} ms" if p99 is not None else "")
        )


class _Bench:
    """The search's measurements, as PlanRunner cells: each row is written once the search
    has given its verdict on it, before the next cell starts."""

    def __init__(self, runner: AdaptiveRunner, session: aiohttp.ClientSession) -> None:
        self.runner = runner
        self.session = session
        self._measured: tuple[int, RunSummary | None, dict[str, object]] | None = None

    async def measure(self, trial: Trial) -> Measurement:
        index = len(self.runner.rows) + 1
        summary, row = await self.runner.measure_cell(self.session, index, trial.cell)
        self._measured = (index, summary, row)
        return Measurement.of(summary, row_error(row))

    def record(self, trial: Trial, result: Measurement, verdict: str) -> None:
        assert self._measured is not None
        index, summary, row = self._measured
        self._measured = None
        eligible = flaw(result, self.runner.settings) is None
        row.update(phase=trial.phase, verdict=verdict, eligible=eligible)
        self.runner.finish_cell(index, trial.cell, summary, row, f"{trial.phase}: {verdict}")

    def note(self, text: str) -> None:
        self.runner.emit(Notice("info", text))


def runner_class(plan: Plan) -> type[PlanRunner]:
    """Who runs a plan: in order, or searched when the plan is an adaptive sweep's."""
    return PlanRunner if plan.search is None else AdaptiveRunner
