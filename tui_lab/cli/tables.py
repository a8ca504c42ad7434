"""Tables for a terminal: the columns `llamalab` shows of a sweep, and how a table is laid out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from tui_lab.engine.results.ranking import is_number
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
