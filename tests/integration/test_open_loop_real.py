"""Open loop against the real llama-server and nginx: a row per rate, its queues shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration


def test_an_open_loop_sweep_writes_a_row_per_rate_with_its_queues(
    lab: LabConfig, tmp_path: Path
) -> None:
    """One slot and a cap of two: at 1 request/s it keeps up; at 20/s six arrive within a
    third of a second, so the client holds some back and the server defers one behind its slot."""
    results = tmp_path / "res"
    out = llamalab(
        "sweep", "round-robin", "--instances", "1", "--parallel", "1", "--concurrency", "2",
        "--rate", "1,20", "--arrival", "poisson", "--n-predict", "8", "--requests", "6",
        "--threads", "1", "--results", str(results), *ports(lab),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "achieved_rate" in out.stdout  # the summary table shows the open-loop columns
    slow, fast = read_rows(next(results.glob("sweep-round-robin-*.jsonl")))
    assert (slow["rate"], fast["rate"]) == (1.0, 20.0)
    for row in (slow, fast):
        assert not row["error"] and row["requests_ok"] == 6, row
        assert 0 <= row["achieved_rate"] <= row["offered_rate"]
        assert row["output_tokens"] == row["server_output_tokens"] == 6 * 8
        assert row["deferred_max"] is not None and row["instance_deferred_max"] is not None
    assert slow["achieved_rate"] > 0 and fast["achieved_rate"] < fast["offered_rate"] / 2
    assert fast["client_queue_max"] >= 1 and fast["client_wait_ms_p99"] > 0
    assert fast["deferred_max"] >= 1  # two in flight, one slot: the server says one waits
