"""Ranking a sweep's cells: which fields are numbers, and the best cells by one of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

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
