"""Tables for a terminal: the columns `llamalab` shows of a sweep, and how a table is laid out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from tui_lab.engine.results.intervals import CI_HIGH, CI_LOW
from tui_lab.engine.results.ranking import RANKED_BY, is_number, marks
from tui_lab.engine.results.reader import Row
from tui_lab.engine.units import figure_text

# What `llamalab` shows of each cell after a sweep, `attach` and `analyze`.
SUMMARY_COLUMNS = (
    "cell",
    "instances",
    "parallel",
    "concurrency",
    "n_predict",
    "requests_ok",
    "requests_failed",
    "output_tok_per_s",
    "requests_per_s",
    "e2el_ms_p50",
    "e2el_ms_p99",
    "cache_hit_rate",
    "prefill_tok_per_s",
    "decode_tok_per_s",
    "error",
)
# Beside the throughput when a sweep ran open loop: the rate asked, drawn and achieved, and the
# queues it built (in the client, and at the servers' slots).
OPEN_LOOP_COLUMNS = ("rate", "offered_rate", "achieved_rate", "client_queue_max", "deferred_max")


def marked(rows: Sequence[Row]) -> list[dict[str, object]]:
    """The rows with their `mark` (best, tie) for the table's own column."""
    return [{**row, "mark": mark} for row, mark in zip(rows, marks(rows), strict=True)]


def summary_columns(rows: Sequence[Row]) -> tuple[str, ...]:
    """SUMMARY_COLUMNS with the mark, the interval where any cell was measured repeatedly, and
    the open-loop ones where a row has a rate."""
    repeated = any(isinstance(r.get("repeats"), int) and r["repeats"] > 1 for r in rows)  # type: ignore[operator]
    open_loop = any(row.get("rate") is not None for row in rows)
    columns: list[str] = []
    for column in SUMMARY_COLUMNS:
        columns.append(column)
        if column == "cell":
            columns.append("mark")
        if column == RANKED_BY and repeated:
            columns += [CI_LOW, CI_HIGH]
        if column == "requests_per_s" and open_loop:
            columns += OPEN_LOOP_COLUMNS
    return tuple(columns)


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A plain text table for a terminal: numbers right-aligned so their magnitudes line up."""
    cells = [[_table_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [
        all(is_number(row.get(column)) or row.get(column) is None for row in rows)
        for column in columns
    ]
    widths = [
        max([len(column), *(len(line[index]) for line in cells)])
        for index, column in enumerate(columns)
    ]

    def render(values: Sequence[str]) -> str:
        padded = (
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    lines = [render(columns), render(["-" * width for width in widths])]
    lines.extend(render(line) for line in cells)
    return "\n".join(lines)


def _table_cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return figure_text(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
