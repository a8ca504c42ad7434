"""The trade-off between per-user speed and total throughput, and its Pareto front.

More clients on the same slots raise the total tok/s while each user's stream slows down, so
no single cell is best for everyone: the front is the set of cells that no other cell beats on
both at once. Whichever cell a user picks should be on it.

Per-user speed is the row's `decode_tok_per_s`: each request's generated tokens over the
decode time the server itself reports for it (summed over the cell's requests), which is the
speed a reader of one stream sees once its first token arrived. It needs no streaming, unlike
TPOT. Total speed is `output_tok_per_s`, the cell's generated tokens over its wall time.

A cell that breaks the run's latency bounds, has failed requests, or is an adaptive search's
short probe is drawn apart and never on the front, for the same reasons `best_cell` skips it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tui_lab.engine.plan.search import Measurement, SearchSettings, flaw
from tui_lab.engine.results.ranking import RANKED_BY, is_number

PER_USER = "decode_tok_per_s"
PER_USER_LABEL = "per-user tok/s (decode)"
TOTAL_LABEL = "total tok/s"


@dataclass(frozen=True)
class TradeoffPoint:
    row: Mapping[str, object]
    total: float  # tok/s of the whole cell
    per_user: float  # decode tok/s of one request
    on_front: bool
    apart: str | None  # why the cell cannot be the answer (a bound it breaks), else None

    @property
    def label(self) -> str:
        r = self.row
        return f"{r.get('instances')}×{r.get('parallel')} c={r.get('concurrency')}"


def cell_flaw(row: Mapping[str, object], bounds: SearchSettings) -> str | None:
    """Why this row cannot be the answer under `bounds`: the adaptive search's own test."""
    if row.get("phase", "full") != "full":
        return "a probe, not a full cell"
    failed = row.get("requests_failed")
    measured = Measurement(
        tok_per_s=_number(row.get(RANKED_BY)) or 0.0,
        e2el_p99_ms=_number(row.get("e2el_ms_p99")),
        ttft_p99_ms=_number(row.get("ttft_ms_p99")),
        requests_failed=int(failed) if is_number(failed) else 0,  # type: ignore[call-overload]
        error=str(row["error"]) if row.get("error") else None,
    )
    return flaw(measured, bounds)


def _number(value: object) -> float | None:
    return float(value) if is_number(value) else None  # type: ignore[arg-type]


def tradeoff(rows: Sequence[Mapping[str, object]], bounds: SearchSettings) -> list[TradeoffPoint]:
    """Every cell with both figures, in row order, its place on the front or apart marked.

    Cells that did not run (an error, no tokens) have no figures and are left out.
    """
    measured = [
        (row, total, per_user, cell_flaw(row, bounds))
        for row in rows
        if not row.get("error")
        and (total := _number(row.get(RANKED_BY))) is not None
        and (per_user := _number(row.get(PER_USER))) is not None
    ]
    candidates = [(t, u) for _, t, u, why in measured if why is None]
    return [
        TradeoffPoint(row, t, u, why is None and not _dominated(t, u, candidates), why)
        for row, t, u, why in measured
    ]


def _dominated(total: float, per_user: float, others: Sequence[tuple[float, float]]) -> bool:
    return any(t >= total and u >= per_user and (t > total or u > per_user) for t, u in others)


def front(points: Sequence[TradeoffPoint]) -> list[TradeoffPoint]:
    """The front's cells from most per-user speed to most total: the order a line joins them."""
    return sorted((p for p in points if p.on_front), key=lambda p: (p.total, -p.per_user))
