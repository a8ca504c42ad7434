"""The trade-off view's front, on hand-made cells whose front is known."""

from __future__ import annotations

from tui_lab.engine.plan.search import SearchSettings
from tui_lab.engine.results.pareto import front, tradeoff


def _cell(cell: int, total: float, per_user: float | None, **more: object) -> dict[str, object]:
    return {
        "cell": cell,
        "instances": 1,
        "parallel": 4,
        "concurrency": cell,
        "output_tok_per_s": total,
        "decode_tok_per_s": per_user,
        "e2el_ms_p99": 100.0 * cell,
        "ttft_ms_p99": None,
        "requests_failed": 0,
        "error": None,
        **more,
    }


ROWS = [
    _cell(1, 40.0, 40.0),  # front: the fastest stream
    _cell(2, 70.0, 35.0),  # front
    _cell(3, 60.0, 30.0),  # dominated by cell 2 on both
    _cell(4, 100.0, 25.0),  # front: the most in all
    _cell(5, 100.0, 20.0),  # same total as 4, slower streams: dominated
]


def test_front_is_the_cells_no_other_beats_on_both() -> None:
    points = tradeoff(ROWS, SearchSettings())
    assert [p.row["cell"] for p in points if p.on_front] == [1, 2, 4]
    assert [p.row["cell"] for p in front(points)] == [1, 2, 4]
    assert all(p.apart is None for p in points)


def test_cells_over_a_bound_are_apart_and_off_the_front() -> None:
    """With p99 under 350 ms, cells 4 and 5 (400, 500 ms) break the bound: cell 3 is still
    dominated by 2, and the front ends at 2 although 4 has more tok/s."""
    points = tradeoff(ROWS, SearchSettings(max_p99_ms=350))
    apart = {p.row["cell"]: p.apart for p in points if p.apart}
    assert set(apart) == {4, 5}
    assert "p99 latency 400 ms over the 350 ms bound" in str(apart[4])
    assert [p.row["cell"] for p in front(points)] == [1, 2]


def test_failed_requests_probes_and_cells_without_figures() -> None:
    rows = [
        _cell(1, 40.0, 40.0, requests_failed=2),
        _cell(2, 90.0, 45.0, phase="probe"),
        _cell(3, 50.0, None),  # no per-user figure: not drawn
        _cell(4, 0.0, 0.0, error="server 0 exited"),
        _cell(5, 30.0, 30.0),
    ]
    points = tradeoff(rows, SearchSettings())
    assert [p.row["cell"] for p in points] == [1, 2, 5]
    assert [p.row["cell"] for p in front(points)] == [5]
    assert points[0].apart == "2 request(s) failed"
    assert points[1].apart == "a probe, not a full cell"
    assert points[2].label == "1×4 c=5"
