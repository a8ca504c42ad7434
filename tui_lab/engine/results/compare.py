"""Two sweeps side by side: what differs about how they ran, then each matching cell's delta
and whether it is more than noise.

A delta means little on its own: the same cell measures a few per cent apart from run to run
on a shared box. Where both rows carry a 95 % interval (`<figure>_ci_low` / `_ci_high`, written
by repeated measurements) a difference counts only when the intervals do not overlap; where
either lacks one, the pair says "no interval" instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tui_lab.engine.results.pareto import PER_USER
from tui_lab.engine.results.ranking import RANKED_BY, is_number
from tui_lab.engine.results.sweep_file import SweepFile

# What makes two rows the same cell: its layout, its load and its balance. The model is not
# among them, so two models on the same grid pair up (the settings difference says so first).
CELL_KEYS = (
    "instances",
    "parallel",
    "concurrency",
    "rate",
    "workload",
    "balance",
    "n_predict",
    "threads",
    "threads_http",
    "batch_size",
    "ubatch_size",
    "placement",
    "gpus",
    "server_flags",
)
COMPARED = (RANKED_BY, PER_USER, "e2el_ms_p99", "ttft_ms_p99")
# Facts that differ between any two runs and say nothing about the measurement.
IGNORED = frozenset({"recorded_at", "results", "argv"})

Verdict = Literal["exceeds the intervals", "within the noise", "no interval", "unmeasured"]
CellKey = tuple[tuple[str, object], ...]


@dataclass(frozen=True)
class Difference:
    name: str
    a: object
    b: object


@dataclass(frozen=True)
class Delta:
    figure: str
    a: float | None
    b: float | None
    verdict: Verdict

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def percent(self) -> float | None:
        change = self.change
        return None if change is None or not self.a else change / self.a * 100


@dataclass(frozen=True)
class CellPair:
    key: CellKey
    deltas: tuple[Delta, ...]

    def delta(self, figure: str) -> Delta:
        return next(d for d in self.deltas if d.figure == figure)


@dataclass(frozen=True)
class Comparison:
    a: str  # file names, for headings
    b: str
    machine: tuple[Difference, ...]
    settings: tuple[Difference, ...]
    pairs: tuple[CellPair, ...]
    only_a: tuple[CellKey, ...]
    only_b: tuple[CellKey, ...]

    def name(self, key: CellKey) -> str:
        """A cell as people say it ("2x4 c=8"), with those other keys that tell apart cells
        of the same layout and concurrency here (a threads sweep's threads, two balances)."""
        shown = dict(key)
        keys = [dict(k) for k in (*(p.key for p in self.pairs), *self.only_a, *self.only_b)]
        same = [k for k in keys if all(k.get(f) == shown.get(f) for f in CELL_KEYS[:3])]
        varying = [f for f in CELL_KEYS[3:] if len({k.get(f) for k in same}) > 1]
        text = f"{shown.get('instances')}×{shown.get('parallel')} c={shown.get('concurrency')}"
        return " ".join([text, *(f"{f}={shown.get(f)}" for f in varying)])


def compare(a: SweepFile, b: SweepFile) -> Comparison:
    cells_a, cells_b = _cells(a.rows), _cells(b.rows)
    return Comparison(
        a.name,
        b.name,
        differences(a.machine, b.machine),
        differences(a.settings, b.settings),
        tuple(
            CellPair(key, tuple(delta(cells_a[key], cells_b[key], f) for f in COMPARED))
            for key in cells_a
            if key in cells_b
        ),
        tuple(key for key in cells_a if key not in cells_b),
        tuple(key for key in cells_b if key not in cells_a),
    )


def differences(a: Mapping[str, object], b: Mapping[str, object]) -> tuple[Difference, ...]:
    """Every fact whose value differs, or that only one side has, in first-seen order."""
    names = dict.fromkeys([*a, *b])
    return tuple(
        Difference(name, a.get(name), b.get(name))
        for name in names
        if name not in IGNORED and a.get(name) != b.get(name)
    )


def cell_key(row: Mapping[str, object]) -> CellKey:
    return tuple((k, _hashable(row[k])) for k in CELL_KEYS if row.get(k) is not None)


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _cells(rows: Sequence[Mapping[str, object]]) -> dict[CellKey, Mapping[str, object]]:
    """Each cell's row; an adaptive search's probes are not the grid's cells and are left out,
    and of a cell measured twice the later row stands."""
    return {cell_key(r): r for r in rows if r.get("phase", "full") == "full"}


def delta(a: Mapping[str, object], b: Mapping[str, object], figure: str) -> Delta:
    va, vb = _figure(a, figure), _figure(b, figure)
    if va is None or vb is None:
        return Delta(figure, va, vb, "unmeasured")
    ia, ib = interval(a, figure), interval(b, figure)
    if ia is None or ib is None:
        return Delta(figure, va, vb, "no interval")
    overlap = ia[0] <= ib[1] and ib[0] <= ia[1]
    return Delta(figure, va, vb, "within the noise" if overlap else "exceeds the intervals")


def _figure(row: Mapping[str, object], figure: str) -> float | None:
    if row.get("error"):
        return None
    value = row.get(figure)
    return float(value) if is_number(value) else None  # type: ignore[arg-type]


def interval(row: Mapping[str, object], figure: str) -> tuple[float, float] | None:
    low, high = row.get(f"{figure}_ci_low"), row.get(f"{figure}_ci_high")
    if is_number(low) and is_number(high):
        return float(low), float(high)  # type: ignore[arg-type]
    return None


# How a comparison reads as a table, for the CLI, the TUI and the report alike.
PAIR_COLUMNS = (
    "cell",
    "A tok/s",
    "B tok/s",
    "Δ tok/s",
    "Δ %",
    "tok/s: noise?",
    "A p99 ms",
    "B p99 ms",
    "Δ p99 %",
    "p99: noise?",
)


def pair_row(comparison: Comparison, pair: CellPair) -> dict[str, object]:
    speed, p99 = pair.delta(RANKED_BY), pair.delta("e2el_ms_p99")
    return dict(
        zip(
            PAIR_COLUMNS,
            (
                comparison.name(pair.key),
                speed.a,
                speed.b,
                speed.change,
                speed.percent,
                speed.verdict,
                p99.a,
                p99.b,
                p99.percent,
                p99.verdict,
            ),
            strict=True,
        )
    )


def difference_rows(comparison: Comparison) -> list[dict[str, object]]:
    """Machine, then settings differences: listed before the cells, as they explain them."""
    return [
        {"what": kind, "name": d.name, "A": d.a, "B": d.b}
        for kind, found in (("machine", comparison.machine), ("setting", comparison.settings))
        for d in found
    ]
