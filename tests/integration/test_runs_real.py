"""The six runs against real llama-server instances, the default model and a real nginx.

Tiny sizes (n_predict 8, a few requests) keep the suite quick on 2 cores; the assertions are
on real figures: tokens counted by the client equal the servers' own counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tui_lab.engine.events import CellFinished, Event, ProcessState, RequestDone, RunFinished
from tui_lab.engine.plan.config import LabConfig, LoadSettings
from tui_lab.engine.plan.runs import (
    Plan,
    ServerOptions,
    concurrent,
    full_sweep,
    round_robin,
    round_robin_sweep,
    single,
    threads_sweep,
)
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.sweeps.runner import Outcome, PlanRunner

pytestmark = pytest.mark.integration

LOAD = LoadSettings(n_predict=8, requests_per_client=2)
OPTS = ServerOptions(threads=1)


async def run(
    plan: Plan, lab: LabConfig, tmp_path: Path, load: LoadSettings = LOAD
) -> tuple[Outcome, list[Event], Path]:
    events: list[Event] = []
    with ResultsWriter(lab.results_dir, plan.run, {"run": plan.run}, {}) as writer:
        runner = PlanRunner(plan, lab, load, events.append, tmp_path / "run", writer)
        outcome = await runner.run()
    return outcome, events, writer.jsonl_path


def assert_real_figures(row: dict[str, object], n_predict: int) -> None:
    assert row["error"] is None
    assert row["requests_failed"] == 0, row["errors"]
    assert row["output_tokens"] == row["requests_ok"] * n_predict
    assert row["server_output_tokens"] == row["output_tokens"]
    assert isinstance(row["output_tok_per_s"], float) and row["output_tok_per_s"] > 0


async def test_single_request_gives_real_tokens_equal_to_the_servers_count(
    lab: LabConfig, tmp_path: Path
) -> None:
    outcome, events, jsonl = await run(single(LOAD, OPTS), lab, tmp_path)
    (row,) = outcome.rows
    assert_real_figures(row, 8)
    assert row["requests_ok"] == 1 and row["balance"] == "direct"
    assert read_rows(jsonl) == [row]
    states = [e.state for e in events if isinstance(e, ProcessState)]
    assert states[0] == "starting" and "ready" in states and states[-1] == "stopped"
    assert sum(isinstance(e, RequestDone) for e in events) == 1


async def test_concurrent_requests_share_one_servers_slots(lab: LabConfig, tmp_path: Path) -> None:
    outcome, _, _ = await run(concurrent(2, 4, LOAD, OPTS), lab, tmp_path)
    (row,) = outcome.rows
    assert_real_figures(row, 8)
    assert row["requests_ok"] == 8 and row["parallel"] == 2 and row["concurrency"] == 4


async def test_round_robin_reaches_every_instance_through_nginx_streaming(
    lab: LabConfig, tmp_path: Path
) -> None:
    load = replace(LOAD, stream=True)
    outcome, _, _ = await run(round_robin(2, 2, 4, "round_robin", load, OPTS), lab, tmp_path, load)
    (row,) = outcome.rows
    assert_real_figures(row, 8)
    per_instance = [int(t) for t in str(row["instance_output_tokens"]).split(";")]
    assert len(per_instance) == 2 and all(t > 0 for t in per_instance)
    assert row["ttft_ms_p50"] is not None and row["itl_ms_p50"] is not None
    access = (tmp_path / "run" / "nginx-access.log").read_text()
    upstreams = set(re.findall(r"upstream=(\S+)", access))
    assert {f"127.0.0.1:{lab.base_port}", f"127.0.0.1:{lab.base_port + 1}"} <= upstreams


async def test_threads_sweep_restarts_the_server_for_each_thread_count(
    lab: LabConfig, tmp_path: Path
) -> None:
    plan = threads_sweep(
        (1, 2), (None,), parallel=2, concurrency=2, load=LOAD, opts=ServerOptions()
    )
    outcome, events, jsonl = await run(plan, lab, tmp_path)
    assert [r["threads"] for r in outcome.rows] == [1, 2]
    for row in outcome.rows:
        assert_real_figures(row, 8)
    starts = [e for e in events if isinstance(e, ProcessState) and e.state == "starting"]
    assert len(starts) == 2
    assert len(read_rows(jsonl)) == 2


async def test_round_robin_sweep_reuses_servers_across_n_predict_and_concurrency(
    lab: LabConfig, tmp_path: Path
) -> None:
    plan = round_robin_sweep(2, 2, (4, 8), (1, 2), "round_robin", LOAD, OPTS)
    outcome, events, jsonl = await run(plan, lab, tmp_path)
    assert len(outcome.rows) == 4
    for row in outcome.rows:
        assert_real_figures(row, int(row["n_predict"]))  # type: ignore[call-overload]
    server_starts = [
        e
        for e in events
        if isinstance(e, ProcessState) and e.role == "server" and e.state == "starting"
    ]
    assert len(server_starts) == 2  # two instances, started once for all four cells
    assert len(read_rows(jsonl)) == 4


async def test_with_the_prompt_cache_on_every_cell_starts_from_fresh_servers(
    lab: LabConfig, tmp_path: Path
) -> None:
    """So a cell never inherits the cache of the cells before it: fair in any order."""
    plan = round_robin_sweep(2, 1, (4,), (1, 2), "round_robin", LOAD, OPTS)
    cached = dataclasses.replace(LOAD, cache_prompt=True)
    outcome, events, _ = await run(plan, lab, tmp_path, cached)
    assert outcome.cells_ok == 2
    starts = [
        e
        for e in events
        if isinstance(e, ProcessState) and e.role == "server" and e.state == "starting"
    ]
    assert len(starts) == 4  # two instances, started again for the second cell


async def test_full_sweep_writes_one_row_per_cell_with_real_figures(
    lab: LabConfig, tmp_path: Path
) -> None:
    plan = full_sweep((1, 2), (1, 2), (1, 2), LOAD, OPTS, balances=("round_robin", "least_conn"))
    outcome, events, jsonl = await run(plan, lab, tmp_path)
    assert outcome.cells_ok == 16 and outcome.cells_failed == 0
    rows = read_rows(jsonl)
    assert len(rows) == 16
    for row in rows:
        assert_real_figures(row, 8)
    assert {(r["instances"], r["parallel"]) for r in rows} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert isinstance(events[-1], RunFinished) and events[-1].cells_ok == 16
    assert sum(isinstance(e, CellFinished) for e in events) == 16


async def test_a_cell_whose_servers_cannot_start_is_recorded_and_the_sweep_goes_on(
    lab: LabConfig, tmp_path: Path
) -> None:
    bad = ServerOptions(threads=1, extra_args=("--no-such-flag",))
    plan = Plan("sweep-full", (*single(LOAD, bad).cells, *single(LOAD, OPTS).cells))
    outcome, _, jsonl = await run(plan, replace(lab, ready_timeout_s=30), tmp_path)
    first, second = outcome.rows
    assert "llama-server #0" in str(first["error"]) and first["output_tokens"] is None
    assert_real_figures(second, 8)
    assert len(read_rows(jsonl)) == 2


async def test_cancelling_a_run_stops_its_servers_and_keeps_finished_cells(
    lab: LabConfig, tmp_path: Path
) -> None:
    plan = round_robin_sweep(
        1, 1, (8,), (1, 2, 3, 4), "round_robin", replace(LOAD, requests=6), OPTS
    )
    events: list[Event] = []
    with ResultsWriter(lab.results_dir, plan.run, {}, {}) as writer:
        runner = PlanRunner(plan, lab, LOAD, events.append, tmp_path / "run", writer)
        task = asyncio.create_task(runner.run())
        while not any(isinstance(e, CellFinished) for e in events):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert isinstance(events[-1], RunFinished) and events[-1].cancelled
    kept = read_rows(writer.jsonl_path)
    assert 1 <= len(kept) < 4
    assert [e.state for e in events if isinstance(e, ProcessState)][-1] == "stopped"


async def test_a_model_path_with_spaces_and_quotes_works_through_nginx(
    lab: LabConfig, tmp_path: Path
) -> None:
    """Paths reach llama-server as one argv item and the run folder reaches nginx quoted."""
    odd = tmp_path / "my models" / 'it\'s "q"; x' / "model file.gguf"
    odd.parent.mkdir(parents=True)
    odd.symlink_to(lab.model)
    run_dir = tmp_path / "run folder 'a' \"b\""
    plan = round_robin(1, 1, 1, "round_robin", LOAD, OPTS)
    events: list[Event] = []
    outcome = await PlanRunner(
        plan, replace(lab, model=odd), LOAD, events.append, run_dir, None
    ).run()
    assert_real_figures(outcome.rows[0], 8)


async def test_with_the_prompt_cache_on_the_same_prompt_twice_is_served_from_the_cache(
    lab: LabConfig, tmp_path: Path
) -> None:
    """The servers' own accounting, raw per request and derived per cell: one client on one
    slot sends the same prompt three times, so each after the first finds it cached."""
    load = replace(LOAD, cache_prompt=True, requests_per_client=3)
    outcome, events, _ = await run(concurrent(1, 1, load, OPTS), lab, tmp_path, load)
    (row,) = outcome.rows
    assert_real_figures(row, 8)
    records = sorted(
        (e.record for e in events if isinstance(e, RequestDone)), key=lambda r: r.index
    )
    assert len(records) == 3
    first, second, _ = records
    assert second.cached_tokens is not None and second.cached_tokens > 0
    assert second.prefill_tokens is not None and second.prefill_tokens < first.prompt_tokens
    assert all(r.prefill_ms is not None and r.decode_ms is not None for r in records)
    assert isinstance(row["cache_hit_rate"], float) and 0 < row["cache_hit_rate"] < 1
    assert row["cached_prompt_tokens"] == sum(r.cached_tokens or 0 for r in records)
    assert isinstance(row["prefill_tok_per_s"], float) and row["prefill_tok_per_s"] > 0
    assert isinstance(row["decode_tok_per_s"], float) and row["decode_tok_per_s"] > 0
