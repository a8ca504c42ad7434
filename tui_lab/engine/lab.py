"""The front door to the engine: what the CLI and the TUI ask of the lab.

Preparing a run (plan, addresses and binaries, free ports, its results files with the settings
and machine it ran with), running, resuming, detaching from it and coming back, and the standing
cluster: each is written once, here, so that the two faces cannot drift apart. Everything a face
must show comes back as data (a warning, a state, an outcome) or as events through its sink;
nothing here prints. Mistakes are `LabError` one-liners, raised before anything starts. Work
that blocks (disk, subprocesses, NVML) runs in threads, so a face's event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tui_lab.engine.errors import LabError
from tui_lab.engine.events import EventSink
from tui_lab.engine.load.client import run_load
from tui_lab.engine.load.stats import RunSummary, summarize_load
from tui_lab.engine.machine.facts import machine_facts
from tui_lab.engine.machine.preflight import require_fit
from tui_lab.engine.plan.config import Balance, LabConfig, Layout, exposure_warning
from tui_lab.engine.plan.runs import Plan
from tui_lab.engine.processes import standing_cluster
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.processes.run_folder import new_run_dir
from tui_lab.engine.processes.standing_cluster import ClusterState
from tui_lab.engine.results.ranking import best_cell
from tui_lab.engine.results.reader import read_meta, read_rows
from tui_lab.engine.results.winner import winner_settings
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.registry import CLUSTER
from tui_lab.engine.settings.run_settings import (
    RunSettings,
    as_spec,
    build_plan,
    cluster_args,
    cluster_layout,
    lab_config,
    load_settings,
)
from tui_lab.engine.settings.spec import RunSpec
from tui_lab.engine.sweeps import detached, resume
from tui_lab.engine.sweeps.adaptive import runner_class
from tui_lab.engine.sweeps.detached import DetachedRun
from tui_lab.engine.sweeps.runner import (
    Outcome,
    PlanRunner,
    check_plan_ports,
    load_spec,
    workload_script,
)

# ---- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedRun:
    """A run checked and ready: its plan, the binaries and addresses found for it, and its
    results files, open (new, or an interrupted sweep's, repaired to be appended to)."""

    settings: RunSettings  # as typed: recorded with the results, for `sweep resume`
    spec: RunSpec  # the same, parsed once
    plan: Plan
    lab: LabConfig
    writer: ResultsWriter
    done: frozenset[int] = frozenset()  # cells a resumed sweep already has rows for
    retry_failed: bool = False  # a resumed sweep measures its failed cells again
    warning: str | None = None  # the servers answer beyond this machine, with no API key

    @property
    def cells(self) -> int:
        return len(self.plan.cells)

    @property
    def todo(self) -> int:
        return self.cells - len(self.done)


class NothingToResume(LabError):
    """Every cell of the sweep has a row: the answer to a resume, not a mistake."""

    def __init__(self, cells: int) -> None:
        super().__init__(f"nothing to resume: all {cells} cells have a row")
        self.cells = cells


async def prepare(settings: RunSettings, argv: Sequence[str] = ()) -> PreparedRun:
    """Everything a new run needs before its first server starts; `argv` is recorded with it."""
    spec = as_spec(settings)
    plan = build_plan(spec)
    lab = await _checked_lab(plan, spec)
    facts = await asyncio.to_thread(machine_facts, lab.server_bin, lab.model)
    config = resume.recorded_config(settings, plan, lab, argv)
    writer = await asyncio.to_thread(ResultsWriter, lab.results_dir, plan.run, config, facts)
    return PreparedRun(settings, spec, plan, lab, writer, warning=_warning(lab))


async def prepare_resume(
    results_file: Path, *, retry_failed: bool = False, api_key: str = ""
) -> PreparedRun:
    """The interrupted sweep of `results_file`, with its recorded settings, to run the cells that
    have no row yet into the same files; `NothingToResume` when none is left."""
    resumption = await asyncio.to_thread(
        resume.load, results_file, retry_failed=retry_failed, api_key=api_key
    )
    plan, settings = resumption.plan, resumption.settings
    if not resumption.todo:
        raise NothingToResume(len(plan.cells))
    spec = as_spec(settings)
    lab = await _checked_lab(plan, spec)
    writer = await asyncio.to_thread(ResultsWriter.append_to, resumption.meta_path)
    return PreparedRun(
        settings, spec, plan, lab, writer, resumption.done, retry_failed, warning=_warning(lab)
    )


async def _checked_lab(plan: Plan, spec: RunSpec) -> LabConfig:
    need_nginx = any(c.layout.proxied for c in plan.cells)
    lab = await asyncio.to_thread(lab_config, spec, need_nginx=need_nginx)
    check_plan_ports(plan, lab)
    return lab


def _warning(lab: LabConfig) -> str | None:
    return exposure_warning(lab.host, lab.api_key)


def runner_for(prepared: PreparedRun, emit: EventSink, run_dir: Path | None = None) -> PlanRunner:
    """The runner of a prepared run (the adaptive search's for an adaptive sweep); a face keeps
    it to ask which servers run now. `run_dir` is a detached run's own folder."""
    plan = prepared.plan
    return runner_class(plan)(
        plan,
        prepared.lab,
        load_settings(prepared.spec),
        emit,
        run_dir or new_run_dir(plan.run),
        prepared.writer,
        prepared.done,
    )


async def run(runner: PlanRunner) -> Outcome:
    """Run to the end (or the cancellation); the results files are closed either way."""
    try:
        return await runner.run()
    finally:
        if runner.results is not None:
            runner.results.close()


async def measure_load(url: str, settings: RunSettings) -> RunSummary:
    """`llamalab load`: one load, the run's client settings, against any server or proxy."""
    parsed = as_spec(settings)
    (concurrency,) = parsed.concurrency  # `load` takes one value: the parser says so
    load = load_settings(parsed)
    api_key = parsed.api_key or None
    if not url.startswith(("http://", "https://")):
        raise LabError(f"--url: {url!r} is not an http:// or https:// URL")
    requests = load.requests_for(concurrency)
    base = url.rstrip("/")
    async with control_session() as session:  # a workload's texts, in that server's tokens
        script = await workload_script(
            session, base, api_key, load.workload, requests, load.n_predict
        )
    spec = load_spec(
        base, load, api_key, concurrency, requests, load.n_predict, script, parsed.rate[0]
    )
    # Summarised inside the loop: Python 3.11's asyncio.run reprs the returned value on exit
    # (its SIGINT handler check): over a second for 40,000 records.
    return summarize_load(await run_load(spec))


# ---- detached runs ---------------------------------------------------------------------------


async def detach(prepared: PreparedRun) -> DetachedRun:
    """Hand a prepared run to a process of its own that goes on without this terminal."""
    prepared.writer.close()
    return await asyncio.to_thread(
        detached.launch,
        prepared.writer.meta_path,
        api_key=prepared.settings.api_key,
        retry_failed=prepared.retry_failed,
    )


async def running_detached() -> DetachedRun | None:
    """The newest detached run that still runs."""
    return await asyncio.to_thread(detached.running)


async def latest_detached() -> DetachedRun | None:
    """The one to attach to: the running one, else the newest (to see how it ended)."""
    return await asyncio.to_thread(detached.latest)


async def follow(state: DetachedRun, emit: EventSink) -> bool:
    """Emit a detached run's events, from its first, until it ends; True when it finished (its
    RunFinished came), False when it died without one."""
    follower = detached.Follower(state)
    while True:
        for event in await asyncio.to_thread(follower.poll):
            emit(event)
        if follower.done:
            return follower.finished
        await asyncio.sleep(detached.POLL_S)


async def stop_detached(state: DetachedRun | None = None) -> DetachedRun | None:
    """Stop `state`, or the detached run that runs now; what was stopped, None when none ran.
    It stops its servers and keeps its finished cells."""
    state = state or await running_detached()
    if state is not None:
        await asyncio.to_thread(detached.stop, state)
    return state


# ---- the standing cluster --------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedCluster:
    """A standing cluster's checked settings: its layout, balancing, binaries and addresses."""

    settings: RunSettings
    lab: LabConfig
    layout: Layout
    balance: Balance
    warning: str | None  # it answers beyond this machine, with no API key
    liveness_timeout_s: float | None  # silent this long, an instance is hung; None: no watch


async def prepare_cluster(settings: RunSettings) -> PreparedCluster:
    spec = as_spec(settings, CLUSTER)
    layout = cluster_layout(spec)
    (balance,) = spec.balance  # the cluster takes one balance: the parser says so
    lab = await asyncio.to_thread(lab_config, spec, need_nginx=True)
    return PreparedCluster(settings, lab, layout, balance, _warning(lab), spec.liveness_timeout)


def _winner(results_file: Path, current: RunSettings) -> RunSettings:
    rows = read_rows(results_file)
    best = best_cell(rows)
    if best is None:
        raise LabError(f"{results_file.name}: no cell ran cleanly, so there is no winner to start")
    recorded = None
    meta_path = results_file.with_suffix(".meta.json")
    if meta_path.is_file():
        config = read_meta(meta_path).get("config")
        saved = config.get("settings") if isinstance(config, dict) else None
        if isinstance(saved, dict):
            recorded = RunSettings.from_mapping(saved, str(meta_path))
    return winner_settings(current, best, recorded)


async def prepare_winner(results_file: Path, current: RunSettings) -> PreparedCluster:
    """The standing cluster of a sweep's best cell (results/winner.py), at the addresses of
    `current`; a `LabError` when the file has no clean cell."""
    return await prepare_cluster(await asyncio.to_thread(_winner, results_file, current))


async def start_cluster(prepared: PreparedCluster, *, preflight: bool = True) -> ClusterState:
    """Start the supervisor and wait for the cluster to be ready. The memory pre-flight first
    (`DoesNotFit`, a `LabError`, when it would not fit), unless told not to."""
    lab, layout = prepared.lab, prepared.layout
    if preflight:
        await asyncio.to_thread(require_fit, lab.model, layout)
    return await asyncio.to_thread(
        standing_cluster.start_detached,
        lab,
        layout.instances,
        cluster_args(prepared.settings),
        lab.ready_timeout_s + 60,
    )


async def serve_cluster(prepared: PreparedCluster) -> int:
    """The supervisor's own body (`llamalab cluster serve`); its exit status."""
    return await standing_cluster.serve(
        prepared.lab, prepared.layout, prepared.balance, prepared.liveness_timeout_s
    )


async def stop_cluster() -> ClusterState | None:
    """Stop the standing cluster; what was stopped, None when none ran."""
    return await asyncio.to_thread(standing_cluster.stop_running)


async def cluster_status(*, figures: bool = False) -> ClusterState | None:
    """The running cluster with each process checked now; with `figures`, also each instance's
    CPU, memory, GPU memory, tok/s and slots (which takes about a second)."""
    state = await standing_cluster.live_status()
    if figures and state is not None:
        state = await standing_cluster.with_latest_figures(state)
    return state
