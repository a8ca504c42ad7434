"""`llamalab compare` as text: how the runs differ first, then each matching cell's delta."""

from __future__ import annotations

from tui_lab.cli.tables import format_table
from tui_lab.engine.results.compare import (
    PAIR_COLUMNS,
    Comparison,
    difference_rows,
    pair_row,
)


def compare_text(comparison: Comparison) -> str:
    lines = [f"A: {comparison.a}", f"B: {comparison.b}", ""]
    differences = difference_rows(comparison)
    if differences:
        lines.append("differences in machine and settings (they may explain the deltas):")
        lines += [format_table(differences, ("what", "name", "A", "B")), ""]
    else:
        lines += ["same machine and settings", ""]
    if comparison.pairs:
        lines.append(
            f"{len(comparison.pairs)} cells in both; deltas are B - A. "
            '"within the noise": the 95 % intervals overlap; "no interval": a row has none'
        )
        lines.append(
            format_table([pair_row(comparison, p) for p in comparison.pairs], PAIR_COLUMNS)
        )
    else:
        lines.append("no cell of A matches a cell of B (same layout, load and balance)")
    for what, keys in (("only in A", comparison.only_a), ("only in B", comparison.only_b)):
        if keys:
            lines.append(f"{what}: {', '.join(comparison.name(k) for k in keys)}")
    return "\n".join(lines)
