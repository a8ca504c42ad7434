"""The report's plots, drawn by matplotlib as SVG text.

Why matplotlib and SVG: it is the best-kept plotting library there is, it draws without a
display or a network (the Agg and SVG backends), and an SVG of a few dozen points is a few tens
of kB that inlines straight into one HTML file: no JavaScript, no CDN, no fonts fetched. Text
stays text (`svg.fonttype: none`), which keeps each plot small and its labels searchable.

Figures are built with the object API, not pyplot, so a report can be drawn from a worker
thread of the TUI without touching pyplot's global state. matplotlib is imported only here, and
only when a report is drawn: the CLI and the TUI start without paying for it.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tui_lab.engine.results.pareto import PER_USER_LABEL, TOTAL_LABEL, TradeoffPoint, front
from tui_lab.engine.results.ranking import RANKED_BY, Layout, best_cell, is_number, layouts_at

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Row = Mapping[str, object]
SIZE = (7.0, 4.2)  # inches at 100 dpi: 700x420 px, readable beside a table
PERCENTILES = ("p50", "p90", "p99")


def throughput_by_layout(rows: Sequence[Row]) -> dict[Layout, list[tuple[int, float]]]:
    """tok/s at each concurrency, one series per (instances, parallel), failed cells left out."""
    series: dict[Layout, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:
        value, conc = row.get(RANKED_BY), row.get("concurrency")
        if row.get("error") or row.get("phase", "full") != "full":
            continue
        if is_number(value) and isinstance(conc, int):
            series[(row.get("instances"), row.get("parallel"))].append((conc, float(value)))  # type: ignore[arg-type]
    return {k: sorted(v) for k, v in sorted(series.items(), key=str)}


@contextmanager
def _figure(name: str) -> Iterator[tuple[Figure, Axes]]:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    # A salt per plot: the SVGs share one HTML page, and clip-path ids must not collide.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": name, "font.size": 9}):
        figure = Figure(figsize=SIZE, dpi=100, layout="constrained")
        yield figure, figure.add_subplot()


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    text = text[text.index("<svg") :]  # no XML declaration or DOCTYPE inside HTML
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)


def throughput_plot(rows: Sequence[Row]) -> str | None:
    series = throughput_by_layout(rows)
    if not series:
        return None
    with _figure("throughput") as (figure, ax):
        for (instances, parallel), points in series.items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=f"{instances}×{parallel}")
        ax.set_xscale("log", base=2)
        ticks = sorted({c for points in series.values() for c, _ in points})
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.minorticks_off()
        ax.set_xlabel("concurrency (clients)")
        ax.set_ylabel(TOTAL_LABEL)
        ax.set_title("Throughput against concurrency, one line per instances × parallel")
        ax.legend(title="layout", fontsize=8)
        ax.grid(alpha=0.3)
        return _svg(figure)


def heat_map(rows: Sequence[Row]) -> str | None:
    """tok/s of each layout at the best cell's concurrency, as the results screen's grid."""
    best = best_cell(rows)
    if best is None or any(k not in best for k in ("instances", "parallel", "concurrency")):
        return None  # a hand-trimmed file without the layout's columns
    values = layouts_at(rows, best["concurrency"])
    instances = sorted({k[0] for k in values}, key=str)
    parallels = sorted({k[1] for k in values}, key=str)
    grid = [[values.get((n, p), float("nan")) for p in parallels] for n in instances]
    with _figure("heatmap") as (figure, ax):
        image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(len(parallels)), [str(p) for p in parallels])
        ax.set_yticks(range(len(instances)), [str(n) for n in instances])
        ax.set_xlabel("parallel (slots per server)")
        ax.set_ylabel("instances")
        ax.set_title(f"tok/s at concurrency {best['concurrency']} (the best cell's)")
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                if value == value:  # not NaN: a layout that ran
                    ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="white")
        figure.colorbar(image, ax=ax, label=TOTAL_LABEL)
        return _svg(figure)


def tradeoff_plot(points: Sequence[TradeoffPoint]) -> str | None:
    if not points:
        return None
    with _figure("tradeoff") as (figure, ax):
        kept = [p for p in points if p.apart is None]
        apart = [p for p in points if p.apart is not None]
        if kept:
            ax.scatter([p.total for p in kept], [p.per_user for p in kept], label="cell")
        if apart:
            ax.scatter(
                [p.total for p in apart],
                [p.per_user for p in apart],
                marker="x",
                color="grey",
                label="over a bound, failed or a probe",
            )
        line = front(points)
        ax.plot(
            [p.total for p in line],
            [p.per_user for p in line],
            "o-",
            color="C3",
            label="Pareto front",
        )
        for p in line:
            ax.annotate(
                p.label,
                (p.total, p.per_user),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        ax.set_xlabel(TOTAL_LABEL)
        ax.set_ylabel(PER_USER_LABEL)
        ax.set_title("Per-user speed against total throughput")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return _svg(figure)


def latency_plot(rows: Sequence[Row]) -> str | None:
    """End-to-end latency percentiles of each cell that ran, as grouped bars."""
    cells = [r for r in rows if not r.get("error") and is_number(r.get("e2el_ms_p50"))]
    if not cells:
        return None
    with _figure("latency") as (figure, ax):
        width = 0.8 / len(PERCENTILES)
        for k, point in enumerate(PERCENTILES):
            values = [_ms(r.get(f"e2el_ms_{point}")) for r in cells]
            ax.bar([i + k * width for i in range(len(cells))], values, width, label=point)
        labels = [
            f"{r.get('instances')}×{r.get('parallel')}\nc={r.get('concurrency')}" for r in cells
        ]
        ax.set_xticks([i + width for i in range(len(cells))], labels, fontsize=7)
        ax.set_ylabel("end-to-end latency, ms")
        ax.set_title("Latency percentiles per cell")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        return _svg(figure)


def _ms(value: object) -> float:
    return float(value) if is_number(value) else 0.0  # type: ignore[arg-type]
