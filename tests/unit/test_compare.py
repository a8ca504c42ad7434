"""`compare`: matching cells of two sweeps, their deltas, and whether a delta is more than noise."""

from __future__ import annotations

from pathlib import Path

from tui_lab.engine.results.compare import compare, difference_rows, pair_row
from tui_lab.engine.results.sweep_file import SweepFile


def _row(instances: int, concurrency: int, tps: float, **more: object) -> dict[str, object]:
    return {
        "instances": instances,
        "parallel": 4,
        "concurrency": concurrency,
        "balance": "round_robin",
        "output_tok_per_s": tps,
        "decode_tok_per_s": 20.0,
        "e2el_ms_p99": 400.0,
        "error": None,
        **more,
    }


def _ci(tps: float, half: float) -> dict[str, object]:
    return {"output_tok_per_s_ci_low": tps - half, "output_tok_per_s_ci_high": tps + half}


def _sweep(name: str, rows: list[dict[str, object]], **meta: object) -> SweepFile:
    return SweepFile(Path(name), tuple(rows), **meta)  # type: ignore[arg-type]


def test_matching_cells_pair_up_with_their_delta() -> None:
    a = _sweep("a.jsonl", [_row(1, 4, 100.0), _row(2, 4, 150.0), _row(2, 8, 160.0)])
    b = _sweep("b.jsonl", [_row(2, 4, 120.0), _row(1, 4, 110.0), _row(4, 4, 90.0)])
    result = compare(a, b)
    assert [result.name(p.key) for p in result.pairs] == ["1×4 c=4", "2×4 c=4"]
    first = result.pairs[0].delta("output_tok_per_s")
    assert (first.a, first.b, first.change) == (100.0, 110.0, 10.0)
    assert first.percent == 10.0
    assert result.pairs[1].delta("output_tok_per_s").percent == -20.0
    assert [dict(k)["concurrency"] for k in result.only_a] == [8]
    assert [dict(k)["instances"] for k in result.only_b] == [4]


def test_intervals_decide_noise_and_their_absence_is_said() -> None:
    a = _sweep(
        "a",
        [_row(1, 4, 100.0, **_ci(100.0, 4)), _row(2, 4, 100.0, **_ci(100.0, 2)), _row(3, 4, 100.0)],
    )
    b = _sweep(
        "b",
        [_row(1, 4, 105.0, **_ci(105.0, 3)), _row(2, 4, 110.0, **_ci(110.0, 2)), _row(3, 4, 130.0)],
    )
    verdicts = [p.delta("output_tok_per_s").verdict for p in compare(a, b).pairs]
    assert verdicts == ["within the noise", "exceeds the intervals", "no interval"]


def test_a_failed_cell_is_unmeasured_not_a_minus_100_percent() -> None:
    a = _sweep("a", [_row(1, 4, 100.0)])
    b = _sweep("b", [_row(1, 4, 0.0, error="server 0 exited")])
    speed = compare(a, b).pairs[0].delta("output_tok_per_s")
    assert speed.verdict == "unmeasured" and speed.percent is None


def test_machine_and_setting_differences_come_first_without_noise() -> None:
    a = _sweep(
        "a",
        [_row(1, 4, 1.0)],
        machine={"hostname": "box", "recorded_at": "t1", "cpu_logical": 2},
        settings={"n_predict": "8", "results": "/x"},
    )
    b = _sweep(
        "b",
        [_row(1, 4, 1.0)],
        machine={"hostname": "box", "recorded_at": "t2", "cpu_logical": 4},
        settings={"n_predict": "16", "results": "/y", "stream": True},
    )
    rows = difference_rows(compare(a, b))
    assert rows == [
        {"what": "machine", "name": "cpu_logical", "A": 2, "B": 4},
        {"what": "setting", "name": "n_predict", "A": "8", "B": "16"},
        {"what": "setting", "name": "stream", "A": None, "B": True},
    ]


def test_adaptive_probes_are_not_cells_to_compare() -> None:
    a = _sweep("a", [_row(1, 4, 50.0, phase="probe"), _row(1, 4, 100.0, phase="full")])
    b = _sweep("b", [_row(1, 4, 90.0)])
    result = compare(a, b)
    (pair,) = result.pairs
    assert pair_row(result, pair)["A tok/s"] == 100.0
    assert pair_row(result, pair)["Δ %"] == -10.0


def test_a_cell_is_named_by_what_tells_it_apart() -> None:
    rows = [_row(1, 4, 50.0, threads_http=12), _row(2, 4, 60.0, threads_http=10)]
    rows += [_row(2, 4, 70.0, threads_http=10, balance="session")]
    result = compare(_sweep("a", rows), _sweep("b", rows))
    names = [result.name(p.key) for p in result.pairs]
    assert names == ["1×4 c=4", "2×4 c=4 balance=round_robin", "2×4 c=4 balance=session"]
