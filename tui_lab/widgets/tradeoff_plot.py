"""Per-user speed against total tok/s of every cell, the Pareto front joined by a line and the
cells that cannot be the answer (over a bound, failed requests, a probe) drawn apart as x."""

from __future__ import annotations

from collections.abc import Sequence

from textual_plotext import PlotextPlot

from tui_lab.engine.results.pareto import PER_USER_LABEL, TOTAL_LABEL, TradeoffPoint, front


class TradeoffPlot(PlotextPlot):
    points: Sequence[TradeoffPoint] = ()  # what is drawn now

    def show(self, points: Sequence[TradeoffPoint]) -> None:
        self.points = points
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel(TOTAL_LABEL)
        plt.ylabel(PER_USER_LABEL)
        if not points:
            plt.title("no cell has both a total and a per-user (decode) tok/s figure")
            self.refresh()
            return
        plt.title("per-user against total tok/s: the front is what no other cell beats on both")
        kept = [p for p in points if p.apart is None and not p.on_front]
        apart = [p for p in points if p.apart is not None]
        if kept:
            plt.scatter([p.total for p in kept], [p.per_user for p in kept], label="cell")
        if apart:
            label = "over a bound / failed / probe"
            plt.scatter(
                [p.total for p in apart], [p.per_user for p in apart], marker="x", label=label
            )
        line = front(points)
        xs, ys = [p.total for p in line], [p.per_user for p in line]
        plt.plot(xs, ys, marker="braille", label="Pareto front")
        plt.scatter(xs, ys, marker="O")
        # Room around the cells, so the corner ones and their labels clear the legend; each
        # front cell's label just below it, so it does not hide the cell.
        totals, speeds = [p.total for p in points], [p.per_user for p in points]
        plt.xlim(*_padded(min(totals), max(totals), 0.05, 0.2))
        low, high = _padded(min(speeds), max(speeds), 0.1, 0.3)
        plt.ylim(low, high)
        for p in line:
            plt.text(p.label, p.total, p.per_user - (high - low) * 0.04)
        self.refresh()


def _padded(low: float, high: float, before: float, after: float) -> tuple[float, float]:
    span = (high - low) or abs(high) or 1.0
    return low - span * before, high + span * after
