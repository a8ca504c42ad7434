"""Ranking a sweep's cells: which fields are numbers, the best cells, and the answer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from tui_lab.engine.results.intervals import CI_HIGH, CI_LOW, Interval
from tui_lab.engine.results.reader import ResultsFileError, Row


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_fields(rows: Sequence[Row]) -> list[str]:
    """Fields worth ranking by: those holding a number in at least one row, in first-seen order."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update((key, None) for key, value in row.items() if is_number(value))
    return list(fields)


def top_cells(
    rows: Sequence[Row], field: str, order: Literal["asc", "desc"], count: int
) -> list[dict[str, object]]:
    """The `count` best cells by `field`; ties keep sweep order.

    Rows whose `field` is missing, None, non-numeric or NaN are left out rather than sorted last:
    a failed cell is not the 10th-fastest layout, and listing it among the best would say so.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more, not {count}")
    if not rows:
        return []
    available = numeric_fields(rows)
    if field not in available:
        raise ResultsFileError(
            f"cannot rank by {field!r}: not a numeric field of these rows "
            f"(numeric fields: {', '.join(available) or 'none'})"
        )
    keyed = [(value, row) for row in rows if (value := _rank_value(row.get(field))) is not None]
    keyed.sort(key=lambda pair: pair[0], reverse=order == "desc")
    return [dict(row) for _, row in keyed[:count]]


def _rank_value(value: object) -> float | None:
    if is_number(value) and not math.isnan(value):  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    return None


# The results screen and any report show the same best cell, so the choice is made once here:
# a failed cell is never the answer, nor an adaptive sweep's probe, nor a full cell of it over
# its latency bound.
RANKED_BY = "output_tok_per_s"

Layout = tuple[object, object]  # (instances, parallel) as the rows record them


def _eligible(row: Row) -> bool:
    return (
        not row.get("error")
        and isinstance(row.get(RANKED_BY), int | float)
        and row.get("phase", "full") == "full"
        and bool(row.get("eligible", True))
    )


def best_cell(rows: Sequence[Row]) -> Row | None:
    """The fastest eligible cell: the row itself, so a face can mark it among the others.
    With repeats its figure is the mean of its measurements."""
    good = [r for r in rows if _eligible(r)]
    return max(good, key=lambda r: float(r[RANKED_BY]), default=None)  # type: ignore[arg-type]


def interval_of(row: Row) -> Interval | None:
    """The row's tok/s interval as written with it; None for a cell measured once."""
    low, high, mean = row.get(CI_LOW), row.get(CI_HIGH), row.get(RANKED_BY)
    if not (is_number(low) and is_number(high) and is_number(mean)):
        return None
    n = row.get("repeats")
    return Interval(float(mean), float(low), float(high), n if isinstance(n, int) else 2)  # type: ignore[arg-type]


BEST, TIE = "best", "tie"


def marks(rows: Sequence[Row]) -> list[str]:
    """Per row: "best", "tie" (an eligible cell whose interval overlaps the best's: these
    measurements do not tell it from the best) or "". Cells measured once tie nothing: without
    a spread there is nothing to overlap."""
    best = best_cell(rows)
    span = interval_of(best) if best is not None else None
    out = []
    for row in rows:
        other = interval_of(row)
        if row is best:
            out.append(BEST)
        elif span is not None and other is not None and _eligible(row) and span.overlaps(other):
            out.append(TIE)
        else:
            out.append("")
    return out


def ties(rows: Sequence[Row]) -> list[Row]:
    """The cells tied with the best, fastest first."""
    tied = [row for row, mark in zip(rows, marks(rows), strict=True) if mark == TIE]
    return sorted(tied, key=lambda r: float(r[RANKED_BY]), reverse=True)  # type: ignore[arg-type]


def layouts_at(rows: Sequence[Row], concurrency: object) -> dict[Layout, float]:
    """tok/s of each (instances, parallel) that ran without error at `concurrency`."""
    return {
        (r["instances"], r["parallel"]): float(r[RANKED_BY])  # type: ignore[arg-type]
        for r in rows
        if r.get("concurrency") == concurrency
        and not r.get("error")
        and r.get(RANKED_BY) is not None
    }
