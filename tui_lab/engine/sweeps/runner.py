"""Running a plan: start servers when the layout changes, measure each cell, write it at once.

This is the one executor behind all six runs, the CLI and the TUI. Every cell's row reaches the
results files before the next cell starts, so an interrupted sweep loses at most the cell that
was running; a cancelled run still stops every process it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import (
    CellFinished,
    CellStarted,
    EventSink,
    Notice,
    RequestDone,
    RunFinished,
    RunStarted,
)
from tui_lab.engine.load.arrivals import Arrivals
from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.load.load_thread import LoadThread
from tui_lab.engine.load.server_metrics import tokens_predicted
from tui_lab.engine.load.server_tokens import filler
from tui_lab.engine.load.stats import RunSummary, summarize_load
from tui_lab.engine.load.workloads import Script, WorkloadSettings, build
from tui_lab.engine.machine.preflight import DoesNotFit, require_fit
from tui_lab.engine.plan.config import Cell, LabConfig, LoadSettings
from tui_lab.engine.plan.passes import interleaved
from tui_lab.engine.plan.runs import Plan
from tui_lab.engine.processes.cluster import Cluster, ClusterSpec, required_ports
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.processes.placement import describe, of_layout
from tui_lab.engine.processes.ports import ensure_free
from tui_lab.engine.results.intervals import CI_HIGH, CI_LOW, run_columns
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.sweeps.cell_faults import CellWatch
from tui_lab.engine.sweeps.repeats import Measured, combine
from tui_lab.engine.telemetry.cell_queue import QueueFigures, sample_queues
from tui_lab.engine.telemetry.energy import CellEnergy, cell_energy, read_energy

WARMUP_N_PREDICT = 4


@dataclass(frozen=True)
class Outcome:
    rows: tuple[dict[str, object], ...]
    results_csv: Path | None
    cells_ok: int
    cells_failed: int


def check_plan_ports(plan: Plan, lab: LabConfig) -> None:
    """All ports any cell will need, checked before the first process starts."""
    most = max(c.layout.instances for c in plan.cells)
    proxied = any(c.layout.proxied for c in plan.cells)
    ensure_free(lab.host, required_ports(lab, most, proxied))


def load_spec(
    url: str,
    load: LoadSettings,
    api_key: str | None,
    concurrency: int,
    requests: int,
    n_predict: int,
    script: Script | None = None,
    rate: float | None = None,
) -> LoadSpec:
    """The one translation of a run's client settings into the load generator's spec: a cell's,
    and `llamalab load`'s against any URL. A rate makes it open loop, seeded like the workload."""
    arrivals = None
    if rate is not None:
        arrivals = Arrivals(rate, load.arrival, load.burst, load.workload.seed)
    return LoadSpec(
        url=url,
        concurrency=concurrency,
        requests=requests,
        n_predict=n_predict,
        api=load.sent_api,
        stream=load.stream,
        temperature=load.temperature,
        ignore_eos=load.ignore_eos,
        cache_prompt=load.cache_prompt,
        timeout_s=load.timeout_s,
        stall_s=load.stall_timeout_s,
        api_key=api_key,
        script=script,
        arrivals=arrivals,
    )


async def cell_script(
    session: aiohttp.ClientSession, cluster: Cluster, load: LoadSettings, cell: Cell
) -> Script | None:
    """The cell's requests (None: the fixed workload's one prompt), their texts cut from the
    first instance's tokens: every instance runs the same model."""
    url, key = cluster.instances[0].url, cluster.lab.api_key
    return await workload_script(session, url, key, load.workload, cell.requests, cell.n_predict)


async def workload_script(
    session: aiohttp.ClientSession,
    url: str,
    api_key: str | None,
    workload: WorkloadSettings,
    requests: int,
    n_predict: int,
) -> Script | None:
    """A workload's requests, their texts in the tokens of the server at `url`."""
    if workload.kind == "fixed":
        return None
    tokens = workload.filler_tokens()
    pieces = await filler(session, url, tokens, workload.seed, api_key) if tokens else None
    return build(workload, pieces, requests, n_predict)


async def warm_up(cluster: Cluster, api_key: str | None) -> None:
    """One short request to each instance directly, so no cell pays for a cold first decode."""
    await asyncio.gather(
        *(
            run_load(
                LoadSpec(
                    url=inst.url,
                    concurrency=1,
                    requests=1,
                    n_predict=WARMUP_N_PREDICT,
                    api_key=api_key,
                )
            )
            for inst in cluster.instances
        )
    )


async def server_token_counts(session: aiohttp.ClientSession, cluster: Cluster) -> list[int | None]:
    return list(
        await asyncio.gather(
            *(tokens_predicted(session, i.url, cluster.lab.api_key) for i in cluster.instances)
        )
    )


def _deltas(before: list[int | None], after: list[int | None]) -> list[int | None]:
    return [None if b is None or a is None else a - b for b, a in zip(before, after, strict=True)]


def cell_row(
    plan: Plan,
    index: int,
    cell: Cell,
    summary: RunSummary | None,
    server_tokens: list[int | None] | None,
    error: str | None,
    energy: CellEnergy | None = None,
    queues: QueueFigures | None = None,
) -> dict[str, object]:
    """One results row; failed cells keep every column (empty) so the CSV stays rectangular."""
    metrics = summary.to_flat_dict() if summary else dict.fromkeys(RunSummary.flat_keys())
    known = [t for t in server_tokens or [] if t is not None]
    complete = server_tokens is not None and len(known) == len(server_tokens)
    return {
        "run": plan.run,
        "cell": index,
        **cell.params(),
        **describe(of_layout(cell.layout)),
        **metrics,
        **run_columns([summary.output_tok_per_s] if summary else []),
        "server_output_tokens": sum(known) if complete else None,
        "instance_output_tokens": ";".join(str(t) for t in known) if complete else None,
        **(queues or QueueFigures()).columns(),
        **asdict(energy or CellEnergy()),
        "error": error,
    }


def row_error(row: dict[str, object]) -> str | None:
    return str(row["error"]) if row["error"] else None


def _spread(row: dict[str, object]) -> str:
    low, high = row[CI_LOW], row[CI_HIGH]
    if not isinstance(low, float) or not isinstance(high, float):
        return ""
    return f"mean of {row['repeats']}, 95% CI {low:.1f}..{high:.1f} tok/s"


class PlanRunner:
    """Runs one plan; the TUI holds on to it to ask which instances exist right now."""

    def __init__(
        self,
        plan: Plan,
        lab: LabConfig,
        load: LoadSettings,
        emit: EventSink,
        run_dir: Path,
        results: ResultsWriter | None,
        skip: Collection[int] = (),
    ) -> None:
        self.plan = plan
        self.lab = lab
        self.load = load
        self.emit = emit
        self.run_dir = run_dir
        self.results = results
        self.skip = frozenset(skip)  # cells a resumed sweep has already measured
        self.cluster: Cluster | None = None
        self.rows: list[dict[str, object]] = []  # this run's rows so far, in order
        # The cells' measured loads, off this loop: a burst of thousands of responses there
        # would keep the TUI (and the telemetry's timers) waiting tens of milliseconds.
        self.load_thread = LoadThread()
        # A fault --stop-on-error stops at, once the cell's row is written (finish_cell).
        self._stop_after: str | None = None

    @property
    def cells_total(self) -> int:
        """The cells this run measures at most: what progress counts against."""
        return len(self.plan.cells)

    async def run(self) -> Outcome:
        todo = [(i, cell) for i, cell in enumerate(self.plan.cells, 1) if i not in self.skip]
        repeats = self.plan.repeats

        async def in_passes(session: aiohttp.ClientSession) -> None:
            """Every cell once per pass (see plan/passes.py); a cell's row is written with
            its last measurement, or at its first failure, which ends its measurements."""
            measured: dict[int, list[Measured]] = {}
            failed: set[int] = set()
            begun = 0
            for number, index, cell in interleaved(todo, repeats):
                if index in failed:
                    continue
                if repeats > 1 and number != begun:
                    begun = number
                    self.emit(Notice("info", f"pass {number} of {repeats}"))
                summary, row = await self.measure_cell(session, index, cell)
                if summary is None or row_error(row):
                    failed.add(index)
                    self.finish_cell(index, cell, summary, row)
                    continue
                runs = measured.setdefault(index, [])
                runs.append((summary, row))
                if len(runs) == repeats:
                    summary, row = combine(runs)
                    self.finish_cell(index, cell, summary, row, _spread(row))

        requests = sum(cell.requests for _, cell in todo) * repeats
        return await self.execute(requests, in_passes)

    async def execute(
        self, requests: int, cells: Callable[[aiohttp.ClientSession], Awaitable[None]]
    ) -> Outcome:
        """The frame of every run: ports checked, RunStarted, `cells` measured (in order, or as
        the adaptive search picks them), then every server stopped and RunFinished, even when
        cancelled (the load thread ended too)."""
        check_plan_ports(self.plan, self.lab)
        self.emit(RunStarted(self.plan.run, self.cells_total, requests))
        self.rows = []
        cancelled = False
        try:
            async with control_session() as session:
                await cells(session)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self.load_thread.close()
            if self.cluster is not None:
                await asyncio.shield(self.cluster.stop())
                self.cluster = None
            rows = self.rows
            failed = sum(1 for r in rows if r["error"])
            csv = self.results.csv_path if self.results else None
            self.emit(RunFinished(self.plan.run, len(rows) - failed, failed, csv, cancelled))
        return Outcome(tuple(rows), csv, len(rows) - failed, failed)

    async def measure_cell(
        self,
        session: aiohttp.ClientSession,
        index: int,
        cell: Cell,
    ) -> tuple[RunSummary | None, dict[str, object]]:
        """Measure one cell on servers of its layout: its figures and its row, not yet written
        (`finish_cell` does), so a driver can add its own columns first. The energy is that of
        the GPUs the cell's instances see. The warm-up stays in this loop: one short request
        per instance is no burst."""
        total = self.cells_total
        self.emit(CellStarted(index, total, cell.params()))
        summary: RunSummary | None = None
        server_tokens: list[int | None] | None = None
        energy: CellEnergy | None = None
        queues: QueueFigures | None = None
        error: str | None = None
        try:
            cluster = await self._cluster_for(cell, session)
            liveness = self.lab.liveness_timeout_s
            async with CellWatch(cluster, session, liveness) as watch:
                before = await server_token_counts(session, cluster)
                script = await cell_script(session, cluster, self.load, cell)
                energy_before = await read_energy(cluster.gpus_in_use)
                spec = load_spec(
                    cluster.url,
                    self.load,
                    self.lab.api_key,
                    cell.concurrency,
                    cell.requests,
                    cell.n_predict,
                    script,
                    cell.rate,
                )
                urls = [i.url for i in cluster.instances]
                async with sample_queues(session, urls, self.lab.api_key) as sampler:
                    result = await self.load_thread.run(
                        spec, on_record=lambda rec: self.emit(RequestDone(index, rec))
                    )
                queues = sampler.figures()
                energy_after = await read_energy(cluster.gpus_in_use)
                server_tokens = _deltas(before, await server_token_counts(session, cluster))
            summary = summarize_load(result)
            energy = cell_energy(energy_before, energy_after, summary.output_tokens)
            if faults := watch.faults():
                # The figures stand, but the cell failed: its row says which process and when.
                error = "; ".join(faults)
                if not self.lab.continue_on_error:
                    self._stop_after = error
        except DoesNotFit as exc:
            error = f"skipped: {exc}"  # a verdict, not a failure: --stop-on-error goes on
            self.emit(Notice("warning", f"cell {index}/{total} {error}"))
        except LabError as exc:
            if not self.lab.continue_on_error:
                raise
            error = str(exc)
            self.emit(Notice("error", f"cell {index}/{total}: {error}"))
        row = cell_row(self.plan, index, cell, summary, server_tokens, error, energy, queues)
        return summary, row

    def finish_cell(
        self,
        index: int,
        cell: Cell,
        summary: RunSummary | None,
        row: dict[str, object],
        note: str = "",
    ) -> None:
        """Write the cell's row to disk at once, then tell the watchers."""
        if self.results is not None:
            self.results.write(row)
        self.rows.append(row)
        error = row_error(row)
        self.emit(CellFinished(index, self.cells_total, cell.params(), summary, error, note))
        if self._stop_after is not None:
            reason, self._stop_after = self._stop_after, None
            raise LabError(f"cell {index}/{self.cells_total}: {reason}; stopped (--stop-on-error)")

    async def _cluster_for(self, cell: Cell, session: aiohttp.ClientSession) -> Cluster:
        """Reuse the running servers unless a server-side parameter changed; one that died (or
        was killed as hung), and nginx with it, is restarted in place first.

        With the prompt cache on, every cell gets fresh servers instead: what one cell left in
        the slots (and in llama-server's host-memory prompt cache, which erasing the slots
        does not clear) would serve the next, so a cell's figures would depend on the order the
        cells ran in. A fresh server costs a model load; its cache starts empty every time."""
        current = self.cluster
        if (
            current is not None
            and not self.load.cache_prompt
            and current.spec.layout == cell.layout
        ):
            if await current.replace_dead(session):
                await warm_up(current, self.lab.api_key)
            await current.set_balance(cell.balance, session)
            return current
        if current is not None:
            self.cluster = None
            await current.stop()
        # After the old servers are gone, whose memory the new ones will use.
        await asyncio.to_thread(require_fit, cell.layout.model or self.lab.model, cell.layout)
        cluster = Cluster(
            self.lab,
            ClusterSpec(cell.layout, cell.balance, self.plan.max_concurrency),
            self.run_dir,
            self.emit,
        )
        await cluster.start(session)
        self.cluster = cluster
        await warm_up(cluster, self.lab.api_key)
        return cluster
