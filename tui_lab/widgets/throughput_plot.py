"""Live tok/s over time: the whole run and each instance, the current sweep cell marked."""

from __future__ import annotations

import time
from collections import deque

from textual_plotext import PlotextPlot

from tui_lab.engine.events import CellStarted
from tui_lab.engine.telemetry import InstanceTelemetry

HISTORY = 600  # samples kept per series: ten minutes at one a second; memory stays flat
REDRAW_S = 0.5


class ThroughputPlot(PlotextPlot):
    """Bounded series fed by telemetry; redrawn at most twice a second, not per sample."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.t0 = time.monotonic()
        self.per_instance: dict[int, deque[tuple[float, float]]] = {}
        self.total: deque[tuple[float, float]] = deque(maxlen=HISTORY)
        self.cells: deque[tuple[float, int]] = deque(maxlen=64)
        self._latest: dict[int, tuple[float, float]] = {}
        self._round: float | None = None  # time of the round whose total is not yet added
        self._dirty = True

    def on_mount(self) -> None:
        self._redraw()
        self.set_interval(REDRAW_S, self._redraw)

    def reset(self) -> None:
        self.t0 = time.monotonic()
        self.per_instance.clear()
        self.total.clear()
        self.cells.clear()
        self._latest.clear()
        self._round = None
        self._dirty = True

    def apply_telemetry(self, sample: InstanceTelemetry) -> None:
        if sample.role != "server" or sample.tokens_per_s is None:
            return
        t = sample.time - self.t0
        series = self.per_instance.setdefault(sample.index, deque(maxlen=HISTORY))
        series.append((t, sample.tokens_per_s))
        self._latest[sample.index] = (t, sample.tokens_per_s)
        if self._round is not None and self._round != t:
            self._add_total()
        self._round = t
        self._dirty = True

    def _add_total(self) -> None:
        """The whole run's rate at a round's time: the sum of each instance's latest rate. Once
        a round (its samples share their time), not once a sample: with N instances that was
        N x N additions a round, and N points a second, so the history held 600 / N seconds."""
        t = self._round
        if t is None:
            return
        self.total.append((t, sum(v for ts, v in self._latest.values() if t - ts < 2.5)))
        self._round = None

    def apply_cell(self, event: CellStarted) -> None:
        self.cells.append((time.monotonic() - self.t0, event.index))
        self._dirty = True

    def _points(self, series: deque[tuple[float, float]]) -> tuple[list[float], list[float]]:
        """At most two points per column (braille has two dots across a cell): plotext's cost
        grows with the points, and ten minutes of nine series (5,400 points) took ~35 ms a
        draw, twice a second, on the loop the load shares; more points than dots show nothing.
        """
        step = -(-len(series) // max(1, 2 * self.size.width))
        points = list(series)[::step]
        return [t for t, _ in points], [v for _, v in points]

    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self._add_total()  # a frame's events hold whole rounds: this one is complete
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("tok/s")
        plt.xlabel("seconds")
        if self.total:
            xs, ys = self._points(self.total)
            plt.plot(xs, ys, label="all", marker="braille")
        if len(self.per_instance) > 1:
            for index, series in sorted(self.per_instance.items())[:8]:
                xs, ys = self._points(series)
                plt.plot(xs, ys, label=f"#{index}", marker="braille")
        for t, index in self.cells:
            plt.vline(t, "gray")
            plt.text(f"c{index}", t, 0, color="gray")
        self.refresh()
