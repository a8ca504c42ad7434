"""The best cell, its ties, the answer in words and the cluster that serves it, from a
hand-made results file of a sweep with three repeats (tests/data/results/repeats/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DATA
from tui_lab.engine import lab
from tui_lab.engine.errors import LabError
from tui_lab.engine.results.ranking import marks, ties
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.recommendation import per_user_tok_per_s, recommendation
from tui_lab.engine.results.winner import winner_settings
from tui_lab.engine.settings.run_settings import RunSettings, cluster_layout

REPEATS = DATA / "repeats" / "sweep-full-repeats.jsonl"


def row(
    cell: int, tok: float, low: float | None, high: float | None, **more: object
) -> dict[str, object]:
    return {
        "cell": cell,
        "instances": 1,
        "parallel": cell,
        "concurrency": 4,
        "output_tok_per_s": tok,
        "output_tok_per_s_ci_low": low,
        "output_tok_per_s_ci_high": high,
        "repeats": 3 if low is not None else 1,
        "error": None,
        **more,
    }


def test_cells_whose_interval_overlaps_the_best_are_ties() -> None:
    rows = [
        row(1, 100.0, 95.0, 105.0),
        row(2, 110.0, 104.0, 116.0),  # best
        row(3, 90.0, 85.0, 95.0),  # below the best's interval
        row(4, 120.0, 100.0, 140.0, error="crashed"),  # failed: neither best nor tie
        row(5, 105.0, None, None),  # measured once: no interval to overlap
        row(6, 108.0, 107.0, 109.0, phase="probe"),  # an adaptive probe is no answer
    ]
    assert marks(rows) == ["tie", "best", "", "", "", ""]
    assert ties(rows) == [rows[0]]


def test_without_repeats_only_the_best_is_marked() -> None:
    rows = [row(1, 100.0, None, None), row(2, 101.0, None, None)]
    assert marks(rows) == ["", "best"]
    assert marks([]) == []


def test_the_hand_made_sweep_marks_its_best_and_one_tie() -> None:
    rows = read_rows(REPEATS)
    assert marks(rows) == ["", "", "tie", "best"]
    assert read_rows(REPEATS.with_suffix(".csv")) and marks(
        read_rows(REPEATS.with_suffix(".csv"))
    ) == marks(rows)


def test_the_recommendation_in_words_gives_the_interval_and_the_ties() -> None:
    text = recommendation(read_rows(REPEATS))
    assert text == (
        "1 instance × 2 slots, up to 2 clients: 62 tok/s in all (95 % CI 60-64 over 3 runs), "
        "31 tok/s per user at p50, latency p99 265 ms; "
        "tied within the intervals: 1×2 c=1 (60 tok/s)"
    )
    assert recommendation([row(1, 5.0, None, None, error="x")]) is None


def test_per_user_speed_is_one_over_tpot_when_streamed() -> None:
    assert per_user_tok_per_s({"tpot_ms_p50": 50.0}) == pytest.approx(20.0)
    streamed = recommendation([row(1, 100.0, None, None, tpot_ms_p50=100.0, ttft_ms_p99=420.0)])
    assert (
        streamed
        == "1 instance × 1 slot, up to 4 clients: 100 tok/s in all, 10 tok/s per user at p50, "
        "TTFT p99 420 ms"
    )
    assert per_user_tok_per_s({}) is None


def test_the_winner_is_the_best_rows_layout_with_the_sweeps_server_settings() -> None:
    current = RunSettings(
        base_port="9100", nginx_port="9108", host="127.0.0.1", server_args="-ngl 9"
    )
    recorded = RunSettings(server_args="--flash-attn on", ctx_per_slot="512", model="a.gguf|b.gguf")
    best = row(
        2,
        1.0,
        None,
        None,
        threads=1,
        threads_http=8,
        batch_size=256,
        ubatch_size=None,
        placement="pinned",
        gpus=None,
        balance="least_conn",
        server_flags="-ctk q8_0",
        model="/m/b.gguf",
    )
    got = winner_settings(current, best, recorded)
    assert (got.instances, got.parallel, got.threads, got.threads_http) == ("1", "2", "1", "8")
    assert (got.placement, got.gpus, got.balance) == ("pinned", "all", "least_conn")
    assert got.server_args == "--flash-attn on --batch-size 256 -ctk q8_0"
    assert (got.ctx_per_slot, got.model) == ("512", "/m/b.gguf")
    assert (got.base_port, got.nginx_port) == ("9100", "9108")  # where the user is now
    bare = winner_settings(current, row(1, 1.0, None, None, balance="direct", threads=None), None)
    assert (bare.server_args, bare.balance, bare.threads) == ("-ngl 9", "round_robin", "default")


async def test_prepare_winner_builds_the_recommended_cluster(tmp_path: Path) -> None:
    current = RunSettings(base_port="9100", nginx_port="9108")
    prepared = await lab.prepare_winner(REPEATS, current)
    assert (prepared.layout.instances, prepared.layout.parallel, prepared.layout.threads) == (
        1,
        2,
        1,
    )
    assert prepared.layout == cluster_layout(prepared.settings)
    failed = tmp_path / "failed.jsonl"
    failed.write_text('{"cell": 1, "output_tok_per_s": 3.0, "error": "crashed"}\n')
    with pytest.raises(LabError, match=r"failed\.jsonl: no cell ran cleanly"):
        await lab.prepare_winner(failed, current)


def test_analyze_marks_best_and_tie_and_ends_with_the_recommendation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tui_lab.cli.main import main

    assert main(["analyze", str(REPEATS), "--count", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split()
    assert header[:3] == ["output_tok_per_s", "cell", "mark"]
    assert "output_tok_per_s_ci_low" in header and "output_tok_per_s_ci_high" in header
    assert [line.split()[:3] for line in lines[2:5]] == [
        ["62.00", "4", "best"],
        ["60.00", "3", "tie"],
        ["40.00", "1", "1"],  # no mark: the next column, instances, follows
    ]
    assert lines[-1] == "recommended: " + str(recommendation(read_rows(REPEATS)))
