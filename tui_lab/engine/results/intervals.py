"""The mean of repeated measurements and its 95 % confidence interval (Student's t).

A cell measured K times on a shared box scatters by a few per cent; the interval says how far the
true mean may lie from the measured one, so two cells whose intervals overlap are not told
apart by these measurements. The t quantiles come from a table (df 1..30, to six decimals) and,
above it, the Cornish-Fisher expansion of t around the normal quantile, which is within 1e-5 of
the exact value there: no scipy for one number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, stdev

CONFIDENCE = 0.95
_Z = 1.959963984540054  # the normal distribution's 0.975 quantile
# t's 0.975 quantile (two-sided 95 %) for 1..30 degrees of freedom.
_T975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.045230, 2.042272,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """Student's t 0.975 quantile: the half-width of a 95 % interval in standard errors."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be 1 or more, not {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None  # None with one measurement: no spread to go by
    high: float | None
    n: int

    def overlaps(self, other: Interval) -> bool:
        """Whether the two could be the same figure; False when either has no interval."""
        if self.low is None or self.high is None or other.low is None or other.high is None:
            return False
        return self.low <= other.high and other.low <= self.high


def interval(values: Sequence[float]) -> Interval:
    """Mean ± t(0.975, n-1) · s / √n of `values` (at least one)."""
    if not values:
        raise ValueError("an interval needs at least one value")
    mean = fmean(values)
    if len(values) < 2:
        return Interval(mean, None, None, len(values))
    half = t_quantile_975(len(values) - 1) * stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


# The columns a results row holds them in, written once here for the writer's and readers' sake.
RUNS = "output_tok_per_s_runs"
CI_LOW = "output_tok_per_s_ci_low"
CI_HIGH = "output_tok_per_s_ci_high"


def run_columns(values: Sequence[float]) -> dict[str, object]:
    """The repeat columns of a row whose cell was measured `values` (tok/s; none when it
    failed): how many, each of them, and the interval (None with fewer than two)."""
    if not values:
        return {"repeats": 0, RUNS: [], CI_LOW: None, CI_HIGH: None}
    span = interval(values)
    return {"repeats": len(values), RUNS: list(values), CI_LOW: span.low, CI_HIGH: span.high}
