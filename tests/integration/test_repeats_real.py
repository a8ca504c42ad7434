"""`--repeats` on real servers: the CLI's sweep measures each cell three times, interleaved,
and writes one row per cell with its runs, their mean and the 95 % interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.intervals import interval
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration


def test_a_sweep_with_three_repeats_writes_runs_means_and_intervals(
    lab: LabConfig, tmp_path: Path
) -> None:
    results = tmp_path / "res"
    out = llamalab(
        "sweep",
        "full",
        "--instances",
        "1",
        "--parallel",
        "2",
        "--concurrency",
        "1,2",
        "--repeats",
        "3",
        "--n-predict",
        "8",
        "--requests",
        "4",
        "--threads",
        "1",
        "--results",
        str(results),
        *ports(lab),
    )
    assert out.returncode == 0, out.stderr
    (jsonl,) = results.glob("sweep-full-*.jsonl")
    rows = read_rows(jsonl)
    assert [r["cell"] for r in rows] == [1, 2]  # one row per cell, the third pass's order
    for row in rows:
        assert row["error"] is None and row["requests_failed"] == 0
        runs = row["output_tok_per_s_runs"]
        assert isinstance(runs, list) and len(runs) == 3 and all(r > 0 for r in runs)
        span = interval(runs)
        assert row["output_tok_per_s"] == pytest.approx(span.mean)
        assert row["output_tok_per_s_ci_low"] == pytest.approx(span.low)
        assert row["output_tok_per_s_ci_high"] == pytest.approx(span.high)
        assert row["repeats"] == 3 and row["requests_ok"] == 3 * 4
        assert row["server_output_tokens"] == row["output_tokens"] == 3 * 4 * 8
    assert out.stderr.count("pass ") >= 3  # "pass 1 of 3" .. "pass 3 of 3"
    assert "recommended: 1 instance × 2 slots, up to " in out.stdout
    assert "95 % CI" in out.stdout
