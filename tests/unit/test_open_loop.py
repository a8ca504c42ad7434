"""Open loop: the arrival schedule (pure), the client sending on it, and the figures it gives."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from statistics import fmean, pstdev

import pytest

from tests.fake_llama_server import FakeLlamaServer
from tui_lab.cli.parser import build_parser, settings_from_args
from tui_lab.engine import lab
from tui_lab.engine.load.arrivals import Arrivals, schedule
from tui_lab.engine.load.client import LoadSpec, OpenLoopCounts, RequestRecord, run_load
from tui_lab.engine.load.stats import summarize, summarize_load
from tui_lab.engine.load.workloads import WorkRequest
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.plan.search import describe, lanes
from tui_lab.engine.processes.instance import control_session
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.run_settings import RunSettings, build_plan, load_settings
from tui_lab.engine.sweeps import resume
from tui_lab.engine.sweeps.runner import cell_row, load_spec
from tui_lab.engine.telemetry.cell_queue import QueueSample, queue_figures, sample_queues

parse = build_parser().parse_args

# ---- the schedule


def test_constant_arrivals_are_evenly_spaced_at_exactly_the_rate() -> None:
    plan = schedule(Arrivals(4.0, "constant"), 8)
    assert plan.times == pytest.approx([i / 4 for i in range(8)])
    assert plan.window_s == pytest.approx(2.0)
    assert plan.offered_rate == pytest.approx(4.0)


def test_poisson_arrivals_have_the_mean_rate_and_exponential_gaps() -> None:
    plan = schedule(Arrivals(5.0, "poisson", seed=3), 20_000)
    gaps = [b - a for a, b in pairwise(plan.times)]
    assert plan.offered_rate == pytest.approx(5.0, rel=0.03)
    assert fmean(gaps) == pytest.approx(0.2, rel=0.03)
    assert pstdev(gaps) / fmean(gaps) == pytest.approx(1.0, rel=0.05)  # exponential: CV 1


def test_poisson_arrivals_are_the_seeds() -> None:
    one = schedule(Arrivals(2.0, seed=7), 50)
    assert schedule(Arrivals(2.0, seed=7), 50) == one
    assert schedule(Arrivals(2.0, seed=8), 50) != one


def test_a_burst_sends_its_group_together_and_keeps_the_mean_rate() -> None:
    plan = schedule(Arrivals(6.0, "constant", burst=3), 7)
    assert plan.times == pytest.approx([0, 0, 0, 0.5, 0.5, 0.5, 1.0])
    assert plan.window_s == pytest.approx(1.5)
    full = schedule(Arrivals(6.0, "constant", burst=3), 9)
    assert full.offered_rate == pytest.approx(6.0)


@pytest.mark.parametrize("arrivals", [Arrivals(0.0), Arrivals(-1.0), Arrivals(1.0, burst=0)])
def test_no_schedule_without_a_positive_rate(arrivals: Arrivals) -> None:
    with pytest.raises(ValueError):
        schedule(arrivals, 3)


# ---- the client on the schedule


def spec(server: FakeLlamaServer, **kw: object) -> LoadSpec:
    fields: dict[str, object] = {"concurrency": 4, "requests": 6, "n_predict": 3}
    fields.update(kw)
    return LoadSpec(url=server.base_url, retry_delay_s=0.01, **fields)  # type: ignore[arg-type]


async def test_requests_are_sent_at_their_arrival_times_not_when_answers_come() -> None:
    async with FakeLlamaServer(delay_s=0.02, slots=4) as server:
        result = await run_load(spec(server, arrivals=Arrivals(10.0, "constant")))
    starts = [r.start - result.wall_start for r in result.records]
    assert starts == pytest.approx([i / 10 for i in range(6)], abs=0.015)
    assert all(r.arrived is not None and r.start >= r.arrived for r in result.records)
    summary = summarize_load(result)
    assert summary.offered_rate == pytest.approx(10.0)
    # Below capacity the answers leave as they arrived, 0.1 s apart, a reply's time later.
    assert summary.achieved_rate == pytest.approx(10.0, rel=0.03)
    assert summary.client_queue_max == 0


async def test_arrivals_past_the_cap_wait_in_the_client_and_keep_their_arrival_time() -> None:
    # Four arrive at once; two may be in flight: two wait about one reply's time.
    async with FakeLlamaServer(delay_s=0.1, slots=2) as server:
        load = spec(server, concurrency=2, requests=4, arrivals=Arrivals(40.0, "constant", 4))
        result = await run_load(load)
    assert server.max_in_flight == 2
    assert {r.arrived for r in result.records} == {result.wall_start}
    summary = summarize_load(result)
    assert summary.client_queue_max == 2
    assert summary.client_wait_ms_p99 == pytest.approx(100, abs=40)
    # Above capacity it is the servers' pace: two slots answer in pairs 0.1 s apart, so the
    # four departures span 0.1 s (three gaps), whatever the 40/s asked.
    assert summary.achieved_rate == pytest.approx(3 / 0.1, rel=0.2)


async def test_a_conversation_arrives_once_and_its_turns_follow_its_answers() -> None:
    chain = (WorkRequest("first turn", 3), WorkRequest("second turn", 3, think_s=0.05))
    async with FakeLlamaServer(slots=2) as server:
        load = spec(server, requests=4, script=(chain, chain), arrivals=Arrivals(5.0, "constant"))
        result = await run_load(load)
    arrived = [r.arrived is not None for r in result.records]
    assert arrived == [True, False, True, False]  # each conversation's first turn arrives
    assert result.open_loop is not None and result.open_loop.served == 2
    assert result.records[1].start >= result.records[0].end + 0.05  # after its think time
    second = result.records[2].arrived
    assert second is not None and second - result.wall_start == pytest.approx(0.2)


def test_closed_loop_has_no_open_loop_figures() -> None:
    record = RequestRecord(0, 0.0, 1.0, 200, 3, 5, None, (), 0, None)
    flat = summarize([record], 1.0).to_flat_dict()
    assert [flat[k] for k in ("offered_rate", "achieved_rate", "client_queue_max")] == [None] * 3


def test_achieved_rate_counts_only_arrivals_served() -> None:
    ok = RequestRecord(0, 0.0, 1.0, 200, 3, 5, None, (), 0, None, arrived=0.0)
    failed = RequestRecord(1, 0.5, 1.0, None, 0, 0, None, (), 0, "timeout", arrived=0.5)
    summary = summarize([ok, failed], 3.0, OpenLoopCounts(1.0, 2.0, served=1, queued_max=0))
    assert (summary.offered_rate, summary.achieved_rate) == (1.0, 0.5)
    assert summary.client_wait_ms_p99 == pytest.approx(0.0)


# ---- the servers' queues


def test_queue_figures_sum_instances_and_keep_each_ones_most() -> None:
    samples = [
        QueueSample((0, 1), (None, 0.2)),
        QueueSample((3, 2), (None, 0.5)),
        QueueSample((None, 4), (None, 0.1)),  # instance 0 missed this round
    ]
    figures = queue_figures(samples)
    assert (figures.deferred_p50, figures.deferred_max) == (3.0, 5)
    assert figures.instance_deferred_max == "3;4"
    assert figures.instance_kv_max is None  # instance 0 never reported its KV cache


def test_no_samples_no_queue_figures() -> None:
    assert set(queue_figures([]).columns().values()) == {None}


async def test_the_sampler_sees_requests_waiting_for_a_slot() -> None:
    async with (
        FakeLlamaServer(delay_s=1.2, slots=1) as server,
        control_session() as session,
        sample_queues(session, [server.base_url], None) as sampler,
    ):
        await run_load(spec(server, concurrency=3, requests=3))
    figures = sampler.figures()
    assert figures.deferred_max == 2  # three in flight, one slot
    assert figures.instance_deferred_max == "2"


# ---- rates in every sweep path

OPEN = RunSettings(
    kind="sweep-full",
    instances="1",
    parallel="1,2",
    concurrency="4",
    rate="0.5,2",
    n_predict="8",
    requests="4",
    model="/m/model.gguf",
)


def test_each_rate_is_a_cell_of_the_full_and_round_robin_sweeps() -> None:
    plan = build_plan(OPEN)
    assert [(c.layout.parallel, c.rate) for c in plan.cells] == [
        (1, 0.5),
        (1, 2.0),
        (2, 0.5),
        (2, 2.0),
    ]
    assert plan.cells[0].params()["rate"] == 0.5
    rr = build_plan(OPEN.with_values(kind="sweep-round-robin", parallel="2", concurrency="1,4"))
    assert [(c.concurrency, c.rate) for c in rr.cells] == [(1, 0.5), (1, 2.0), (4, 0.5), (4, 2.0)]
    single_rate = build_plan(OPEN.with_values(kind="test-concurrent", parallel="2", rate="3"))
    assert [c.rate for c in single_rate.cells] == [3.0]
    assert [c.rate for c in build_plan(OPEN.with_values(rate="")).cells] == [None, None]


def test_the_cell_load_is_open_loop_seeded_with_the_workload_seed() -> None:
    settings = OPEN.with_values(arrival="constant", burst="2", seed="5")
    load = load_settings(settings)
    spec = load_spec("http://x", load, None, 4, 8, 8, rate=2.0)
    assert spec.arrivals == Arrivals(2.0, "constant", 2, 5)
    assert load_spec("http://x", load, None, 4, 8, 8).arrivals is None


def test_a_sweep_over_rates_resumes_with_the_same_cells(tmp_path: Path) -> None:
    plan = build_plan(OPEN)
    lab = LabConfig(server_bin=Path("/s"), model=Path("/m/model.gguf"), nginx_bin=None)
    with ResultsWriter(tmp_path, plan.run, resume.recorded_config(OPEN, plan, lab), {}) as w:
        for index in (1, 2):
            w.write(cell_row(plan, index, plan.cells[index - 1], None, None, None))
    resumed = resume.load(w.jsonl_path)
    assert resumed.plan == plan and resumed.todo == [3, 4]
    assert [r["rate"] for r in read_rows(w.jsonl_path)] == [0.5, 2.0]
    row = read_rows(w.jsonl_path)[0]
    assert {"offered_rate", "achieved_rate", "deferred_max", "instance_kv_max"} <= set(row)


def test_the_adaptive_search_climbs_concurrency_for_each_rate_apart() -> None:
    plan = build_plan(OPEN.with_values(kind="sweep-adaptive", parallel="2", concurrency="1,4"))
    grouped = lanes(plan.cells)
    assert [[(c.rate, c.concurrency) for c in lane] for lane in grouped] == [
        [(0.5, 1), (0.5, 4)],
        [(2.0, 1), (2.0, 4)],
    ]
    assert describe(grouped[1][0]) == "1x2 c=1 rate=2/s"


async def test_llamalab_load_takes_a_rate_and_a_workload() -> None:
    async with FakeLlamaServer() as server:
        argv = ["load", "--url", server.base_url, "--rate", "20", "--arrival", "constant"]
        argv += ["--requests", "4", "--n-predict", "3", "--workload", "fixed"]
        summary = await lab.measure_load(server.base_url, settings_from_args(parse(argv)))
    assert summary.requests_ok == 4 and summary.offered_rate == pytest.approx(20.0)
    assert summary.achieved_rate is not None and summary.client_queue_max == 0
