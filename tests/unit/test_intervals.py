"""The 95 % interval of repeated measurements: t quantiles against published values, and the
rate at which intervals of synthetic normal samples cover their known mean."""

from __future__ import annotations

import random

import pytest

from tui_lab.engine.results.intervals import Interval, interval, t_quantile_975


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423), (31, 2.0395),
     (40, 2.0211), (60, 2.0003), (120, 1.9799), (10_000, 1.9602)],
)  # fmt: skip
def test_t_quantiles_match_published_tables(df: int, expected: float) -> None:
    assert t_quantile_975(df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_needs_a_degree_of_freedom() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        t_quantile_975(0)


def test_interval_of_known_values() -> None:
    # mean 137.766..., s = 1.6258, t(2) = 4.302653: half-width 4.3027 * 1.6258 / sqrt(3)
    got = interval([138.1, 136.0, 139.2])
    assert got.mean == pytest.approx(137.7667, abs=1e-4)
    assert got.low == pytest.approx(133.7280, abs=1e-3)
    assert got.high == pytest.approx(141.8054, abs=1e-3)
    assert got.n == 3


def test_one_value_has_a_mean_but_no_interval_and_ties_nothing() -> None:
    one = interval([5.0])
    assert one == Interval(5.0, None, None, 1)
    assert not one.overlaps(interval([4.0, 6.0]))
    with pytest.raises(ValueError, match="at least one"):
        interval([])


def test_overlap_is_symmetric_and_touching_counts() -> None:
    a, b, c = Interval(10, 8, 12, 3), Interval(13, 12, 14, 3), Interval(20, 19, 21, 3)
    assert a.overlaps(b) and b.overlaps(a)
    assert not a.overlaps(c) and not c.overlaps(a)


@pytest.mark.parametrize("n", [3, 10])
def test_intervals_cover_the_true_mean_at_about_95_percent(n: int) -> None:
    rng = random.Random(14 + n)
    trials, mean, sd = 2000, 138.0, 4.0
    covered = 0
    for _ in range(trials):
        got = interval([rng.gauss(mean, sd) for _ in range(n)])
        assert got.low is not None and got.high is not None
        covered += got.low <= mean <= got.high
    assert 0.93 <= covered / trials <= 0.97
