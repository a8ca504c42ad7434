"""Figures the panel shows, made by the engine from raw reports: a server's activity, when a
process started, the lab's total tok/s, the results' best cell."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tui_lab.engine.events import InstanceTelemetry, ProcessState
from tui_lab.engine.processes.instance import ServerInstance
from tui_lab.engine.results.ranking import best_cell, layouts_at
from tui_lab.engine.telemetry.server_poll import TOTAL_WINDOW_S, ServerReport, TokenRates

SAMPLE = InstanceTelemetry(
    role="server",
    index=0,
    pid=1,
    time=0.0,
    alive=True,
    cpu_percent=None,
    rss_bytes=None,
    threads=None,
    gpu_memory_bytes=None,
    gpu_reason=None,
    slots_busy=0,
    slots_total=4,
    requests_processing=0,
    requests_deferred=0,
    tokens_predicted_total=0,
    tokens_per_s=None,
    requests_served=None,
    answering=True,
)


def test_a_servers_activity_comes_from_its_slots_and_whether_it_answered() -> None:
    assert SAMPLE.activity is None  # idle: its process state ("ready") says it all
    assert replace(SAMPLE, slots_busy=3).activity == "busy"
    assert replace(SAMPLE, answering=False, slots_busy=None).activity == "not answering"
    gone = replace(SAMPLE, alive=False, answering=False, slots_busy=None)
    assert gone.activity is None  # a dead process is "crashed" or "stopped", from its state
    assert replace(SAMPLE, role="nginx", answering=False).activity is None


def report(time_s: float, tokens: int) -> ServerReport:
    return ServerReport(time_s, 0, 1, 0, 0, tokens)


def test_the_labs_total_is_one_point_a_round_whatever_the_instances() -> None:
    """64 servers at 1.5 tok/s each make 96 tok/s a round, summed once by the engine."""
    rates = TokenRates()
    totals = []
    for second in range(4):
        for i in range(64):
            key = ("run", "server", i)
            rates.rate(key, 100 + i, report(2.0 * second, 3 * second), float(second))
        totals.append(rates.total(float(second)))
    assert totals[0] is None  # no rate yet: no point, rather than a made-up 0
    assert totals[1:] == [pytest.approx(96.0)] * 3


def test_a_server_that_missed_a_round_counts_with_its_last_rate_for_a_short_while() -> None:
    rates = TokenRates()
    a, b = ("run", "server", 0), ("run", "server", 1)
    for key in (a, b):
        rates.rate(key, 1, report(0.0, 0), 0.0)
        rates.rate(key, 1, report(1.0, 10), 1.0)
    assert rates.total(1.0) == pytest.approx(20.0)
    rates.rate(a, 1, report(2.0, 20), 2.0)  # b did not answer this round
    assert rates.total(2.0) == pytest.approx(20.0)
    late = 1.0 + TOTAL_WINDOW_S
    rates.rate(a, 1, report(late, 30), late)  # 10 tokens over 1.5 s
    assert rates.total(late) == pytest.approx(10 / 1.5)  # b's old rate has aged out
    rates.forget(a)
    assert rates.total(late) is None


async def test_the_engine_says_when_it_started_a_server_and_where_it_listens(
    tmp_path: Path,
) -> None:
    events: list[object] = []
    before = time.time()
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    instance = ServerInstance(0, "127.0.0.1", 18931, sleeper, tmp_path / "s.log", events.append)
    await instance.start()
    try:
        (starting,) = [e for e in events if isinstance(e, ProcessState)]
        assert starting.state == "starting" and starting.url == "http://127.0.0.1:18931"
        assert starting.started is not None and before <= starting.started <= time.time()
    finally:
        await instance.stop()


def test_the_best_cell_is_an_eligible_full_cell_without_error_and_is_the_row_itself() -> None:
    rows: list[dict[str, object]] = [
        {"cell": 1, "instances": 1, "parallel": 1, "concurrency": 8, "output_tok_per_s": 90.0},
        {
            "cell": 2,
            "instances": 2,
            "parallel": 4,
            "concurrency": 8,
            "output_tok_per_s": 99.0,
            "error": "crashed",
        },
        {"cell": 3, "instances": 2, "parallel": 1, "concurrency": 8, "output_tok_per_s": 95.0},
        {
            "cell": 4,
            "instances": 4,
            "parallel": 1,
            "concurrency": 1,
            "output_tok_per_s": 120.0,
            "phase": "probe",
        },
    ]
    assert best_cell(rows) is rows[2]
    assert best_cell([]) is None
    assert layouts_at(rows, 8) == {(1, 1): 90.0, (2, 1): 95.0}
