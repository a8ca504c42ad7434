"""Live tok/s over time: the whole run and each instance, the current sweep cell marked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

from rich.text import Text
from textual import work
from textual.app import RenderResult
from textual.color import Color
from textual_plotext import PlotextPlot

from tui_lab.engine.events import CellStarted, InstanceTelemetry, MachineTelemetry, ProcessOwner

HISTORY = 600  # samples kept per series: ten minutes at one a second; memory stays flat
REDRAW_S = 0.5


class ThroughputPlot(PlotextPlot):
    """Bounded series fed by telemetry; redrawn at most twice a second, not per sample. The
    whole lab's line is the engine's total (MachineTelemetry.tokens_per_s), one point a round."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.t0 = time.monotonic()
        self.per_instance: dict[tuple[ProcessOwner, int], deque[tuple[float, float]]] = {}
        self.total: deque[tuple[float, float]] = deque(maxlen=HISTORY)
        self.cells: deque[tuple[float, int]] = deque(maxlen=64)
        self._dirty = True
        self._figure = Text()  # the last figure built
        self._building = threading.Lock()

    def on_mount(self) -> None:
        self._redraw()
        self.set_interval(REDRAW_S, self._redraw)

    def reset(self) -> None:
        self.t0 = time.monotonic()
        self.per_instance.clear()
        self.total.clear()
        self.cells.clear()
        self._dirty = True

    def apply_telemetry(self, sample: InstanceTelemetry) -> None:
        if sample.role != "server" or sample.tokens_per_s is None:
            return
        series = self.per_instance.setdefault((sample.owner, sample.index), deque(maxlen=HISTORY))
        series.append((sample.time - self.t0, sample.tokens_per_s))
        self._dirty = True

    def apply_machine(self, sample: MachineTelemetry) -> None:
        if sample.tokens_per_s is not None:
            self.total.append((sample.time - self.t0, sample.tokens_per_s))
            self._dirty = True

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
        """Takes the figure's points here, on the loop; plotext builds it in a thread."""
        if not self._dirty:
            return
        self._dirty = False
        lines = [("all", self._points(self.total))] if self.total else []
        if len(self.per_instance) > 1:
            for (owner, index), series in sorted(self.per_instance.items())[:8]:
                label = f"#{index}" if owner == "run" else f"cluster #{index}"
                lines.append((label, self._points(series)))
        theme = self._get_plotext_theme_name(self.app.theme)
        self._draw(lines, list(self.cells), self.size.width, self.size.height, theme, self._muted())

    def _muted(self) -> tuple[int, int, int]:
        """The theme's muted text colour, for the cell marks: plotext takes RGB, not $names."""
        theme = self.app.theme_variables
        return (Color.parse(theme["background"]) + Color.parse(theme["foreground-muted"])).rgb

    @work(exclusive=True, group="plot")
    async def _draw(
        self,
        lines: list[tuple[str, tuple[list[float], list[float]]]],
        cells: list[tuple[float, int]],
        width: int,
        height: int,
        theme: str,
        muted: tuple[int, int, int],
    ) -> None:
        """plotext's build is pure Python, 8-13 ms a figure on the test box, once a second: on
        the loop that was one stall of the loop the load shares; in a thread the interpreter
        hands the loop its turn every few ms (sys.getswitchinterval)."""
        self._figure = await asyncio.to_thread(
            self._build, lines, cells, width, height, theme, muted
        )
        self.refresh()

    def _build(
        self,
        lines: list[tuple[str, tuple[list[float], list[float]]]],
        cells: list[tuple[float, int]],
        width: int,
        height: int,
        theme: str,
        muted: tuple[int, int, int],
    ) -> Text:
        """Runs in a thread, the only one that touches the plotext figure after mount; the
        lock keeps a superseded draw still running from interleaving with the next one."""
        with self._building:
            plt = self.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title("tok/s")
            plt.xlabel("seconds")
            for label, (xs, ys) in lines:
                plt.plot(xs, ys, label=label, marker="braille")
            for t, index in cells:
                plt.vline(t, muted)
                plt.text(f"c{index}", t, 0, color=muted)
            plt.plotsize(width, height)
            plt._set_size(width, height)  # as PlotextPlot.render does: plotsize alone is not enough
            plt.theme(theme)
            return Text.from_ansi(plt.build())

    def on_resize(self) -> None:
        self._dirty = True
        self._redraw()

    def render(self) -> RenderResult:
        return self._figure
