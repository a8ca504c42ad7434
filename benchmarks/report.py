"""What every benchmark shares: pinning to a core, medians of repeats, one printed
table each."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from statistics import median


def pinned(core: int) -> list[str]:
    """A command prefix running on one core, so "per core" figures mean one core."""
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def machine_note() -> str:
    return f"{os.cpu_count()} cores here, shared with other work: figures are noisy, medians"


def mid(values: Sequence[float | None]) -> float | None:
    """The median of the measured values; None when none was measured."""
    got = [v for v in values if v is not None]
    return median(got) if got else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def print_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()
) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))
    for note in notes:
        print(f"  {note}")
