"""Which cell of a sweep is its answer, and how the layouts compare at that cell's load.

The results screen and any report show the same best cell, so the choice is made once here:
a failed cell is never the answer, nor an adaptive sweep's probe, nor a full cell of it over
its latency bound.
"""

from __future__ import annotations

from collections.abc import Sequence

from tui_lab.engine.results.files import Row

RANKED_BY = "output_tok_per_s"

Layout = tuple[object, object]  # (instances, parallel) as the rows record them


def best_cell(rows: Sequence[Row]) -> Row | None:
    """The fastest eligible cell: the row itself, so a face can mark it among the others."""
    good = [
        r
        for r in rows
        if not r.get("error")
        and isinstance(r.get(RANKED_BY), int | float)
        and r.get("phase", "full") == "full"
        and r.get("eligible", True)
    ]
    return max(good, key=lambda r: float(r[RANKED_BY]), default=None)  # type: ignore[arg-type]


def layouts_at(rows: Sequence[Row], concurrency: object) -> dict[Layout, float]:
    """tok/s of each (instances, parallel) that ran without error at `concurrency`."""
    return {
        (r["instances"], r["parallel"]): float(r[RANKED_BY])  # type: ignore[arg-type]
        for r in rows
        if r.get("concurrency") == concurrency
        and not r.get("error")
        and r.get(RANKED_BY) is not None
    }
