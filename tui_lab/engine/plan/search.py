"""The adaptive sweep's search: which cell to measure next, decided from what was measured.

A full grid measures every cell at full length, and most of its time goes to cells nobody
wants: concurrency far beyond what a layout can serve, where a cell only queues more requests
behind the same slots. The search spends its time where the answer can be:

1. ladders: for each layout (a lane: layout x balance, in the plan's order) raise concurrency
   through the list with short probes (one request per client) and stop once a step gains less
   than `plateau` over the lane's best, a probe has failed requests, its latency is over the
   user's bound (goodput: the best tok/s whose p99 latency or TTFT stays under it), or it has
   twice as many clients as the layout has slots (more would only wait in a queue);
2. halving: only the `finalists` best probes (over all lanes) get full cells -- the grid's own
   cells, so their figures compare with a grid's; a finalist whose full cell fails or breaks the
   bound hands its place to the next best probe. Confirming the best few cells rather than one
   per layout matters at a plateau, where neighbouring cells differ by less than probe noise.

3. with repeats, settling: the finalists are measured again, round by round, while the top
   cells' 95 % intervals overlap, each at most `repeats` times. Each round measures at most
   half the cells of the one before (sequential halving, Karnin, Koren & Somekh 2013: the
   budget goes to the cells that can still win), never fewer than two: the best and its
   closest rival. A finalist whose interval falls clear below the best's is not measured
   again; one that halving leaves out waits until its mean is among the best. The search stops
   once the best is clear or the budget is spent. Each finalist's row then holds the mean of
   its measurements.

The answer is the fastest full cell within the bounds. This module is pure logic: the driver
(engine/sweeps/adaptive.py) measures through PlanRunner, the tests measure a synthetic surface.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Literal, Protocol, TypeVar

from tui_lab.engine.load.stats import RunSummary
from tui_lab.engine.plan.config import Cell
from tui_lab.engine.results.intervals import interval

Phase = Literal["probe", "full"]
DEFAULT_PLATEAU = 0.03
DEFAULT_FINALISTS = 3
PROBE_REQUESTS_PER_CLIENT = 1


@dataclass(frozen=True)
class SearchSettings:
    plateau: float = DEFAULT_PLATEAU  # a step gaining less than this ends a lane's ladder
    finalists: int = DEFAULT_FINALISTS  # best probes confirmed with full cells
    max_p99_ms: float | None = None  # goodput bound on p99 end-to-end latency
    max_ttft_ms: float | None = None  # goodput bound on p99 time to first token
    repeats: int = 1  # the most full measurements of a finalist, while the best is unclear


@dataclass(frozen=True)
class Trial:
    cell: Cell  # what is measured: a probe's requests are fewer than its grid cell's
    phase: Phase


@dataclass(frozen=True)
class Measurement:
    tok_per_s: float
    e2el_p99_ms: float | None = None
    ttft_p99_ms: float | None = None
    requests_failed: int = 0
    error: str | None = None  # the cell did not run: a server failed, or it does not fit

    @classmethod
    def mean_of(cls, results: Sequence[Measurement]) -> Measurement:
        """Several measurements of one cell, as the mean the row will hold."""

        def mean(values: Sequence[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return fmean(known) if known else None

        return cls(
            fmean(r.tok_per_s for r in results),
            mean([r.e2el_p99_ms for r in results]),
            mean([r.ttft_p99_ms for r in results]),
            sum(r.requests_failed for r in results),
        )

    @classmethod
    def of(cls, summary: RunSummary | None, error: str | None) -> Measurement:
        if summary is None:
            return cls(0.0, error=error or "not measured")
        return cls(
            summary.output_tok_per_s,
            summary.e2el_ms.p99,
            summary.ttft_ms.p99,
            summary.requests_failed,
            error,
        )


class Bench(Protocol):
    """Where trials are measured and their verdicts recorded (a row each, written at once)."""

    async def measure(self, trial: Trial) -> Measurement: ...

    def record(self, trial: Trial, result: Measurement, verdict: str) -> None: ...

    def note(self, text: str) -> None: ...

    def expect(self, cells: Sequence[Cell]) -> None:
        """The cells the search may still measure, at most: what progress counts against."""


@dataclass(frozen=True)
class Scored:
    cell: Cell  # the grid's cell this trial stands for
    result: Measurement
    full: bool  # measured at the grid cell's full length


@dataclass(frozen=True)
class SearchResult:
    best: Scored | None
    why_none: str = ""


def lane_of(cell: Cell) -> object:
    """What the cells of one lane share: everything but the concurrency (an open-loop rate is
    the traffic offered, so each rate climbs its own concurrency cap)."""
    return (cell.layout, cell.balance, cell.rate)


def lanes(space: Sequence[Cell]) -> list[list[Cell]]:
    """The space's cells by (layout, balance, rate), in first-seen order, each by concurrency."""
    grouped: dict[object, list[Cell]] = {}
    for cell in space:
        grouped.setdefault(lane_of(cell), []).append(cell)
    return [sorted(cells, key=lambda c: c.concurrency) for cells in grouped.values()]


def probe_of(cell: Cell) -> Cell:
    return replace(cell, requests=min(cell.requests, PROBE_REQUESTS_PER_CLIENT * cell.concurrency))


def outlook(
    lanes_left: Sequence[Sequence[Cell]], space: Sequence[Cell], settings: SearchSettings
) -> list[Cell]:
    """The most the search may still measure while ladders are left to climb: a probe of every
    cell in those lanes, then full cells for the finalists, round by round (the largest cells
    of the space, as which cells they will be is not known yet)."""
    probes = [probe_of(cell) for lane in lanes_left for cell in lane]
    return probes + [cell for cells in finalist_rounds(space, settings) for cell in cells]


def finalist_rounds(cells: Sequence[Cell], settings: SearchSettings) -> list[list[Cell]]:
    """The most each finalist round may measure of `cells`: the largest, as which cells will
    be finalists, or stay tied, is not known yet."""
    largest = sorted(cells, key=lambda c: c.requests, reverse=True)
    return [largest[:size] for size in rounds_of(settings)]


def halved(size: int) -> int:
    """How many cells the next settling round measures after one of `size`: half, rounded up,
    but two at least (while there are two), as the best must be told from its closest rival."""
    return min(size, max(2, math.ceil(size / 2)))


def rounds_of(settings: SearchSettings) -> list[int]:
    """The most cells each finalist round measures: all finalists, then halving, `repeats`
    rounds in all (a lone finalist is the answer after its first)."""
    sizes = [settings.finalists]
    while len(sizes) < settings.repeats and sizes[-1] > 1:
        sizes.append(halved(sizes[-1]))
    return sizes


def describe(cell: Cell) -> str:
    rate = "" if cell.rate is None else f" rate={cell.rate:g}/s"
    return f"{cell.layout.instances}x{cell.layout.parallel} c={cell.concurrency}{rate}"


def _ms(value: float | None) -> str:
    return "unmeasured" if value is None else f"{value:.0f} ms"


def flaw(result: Measurement, settings: SearchSettings) -> str | None:
    """Why this measurement cannot be the answer, or None when it can."""
    if result.error:
        return result.error
    if result.requests_failed:
        return f"{result.requests_failed} request(s) failed"
    for value, bound, name in (
        (result.e2el_p99_ms, settings.max_p99_ms, "p99 latency"),
        (result.ttft_p99_ms, settings.max_ttft_ms, "p99 TTFT"),
    ):
        if bound is not None and (value is None or value > bound):
            return f"{name} {_ms(value)} over the {bound:g} ms bound"
    return None


def slots(cell: Cell) -> int:
    """Requests the layout's servers decode at once: a request beyond them waits for a slot."""
    return cell.layout.instances * cell.layout.parallel


def only_queues_beyond(cell: Cell) -> bool:
    """Whether more clients than this cell's can only lengthen the servers' queues: at twice
    the slots every slot has a request waiting behind the one it decodes, so none idles
    between two. Not so when a conversation keeps to one instance (session balance), where
    one instance may hold most of the clients while another's slots idle."""
    return cell.balance != "session" and cell.concurrency >= 2 * slots(cell)


async def climb(lane: Sequence[Cell], settings: SearchSettings, bench: Bench) -> list[Scored]:
    """Probe one lane up its concurrency list; its probes that may be the answer."""
    good: list[Scored] = []
    best: Scored | None = None
    for cell in lane:
        probe = probe_of(cell)
        # At full length a probe is the grid's cell, unless the finalists are measured
        # repeatedly: one measurement of it is then a probe like the others.
        trial = Trial(probe, "full" if probe == cell and settings.repeats == 1 else "probe")
        result = await bench.measure(trial)
        problem = flaw(result, settings)
        stop = True
        if problem is not None:
            what = "layout abandoned" if result.error else "stop raising concurrency"
            verdict = f"{problem}: {what}"
        elif best is None:
            verdict, stop = "first step: raise concurrency", False
        else:
            gain = result.tok_per_s / best.result.tok_per_s - 1 if best.result.tok_per_s else 1.0
            stop = gain < settings.plateau
            verdict = f"{gain:+.1%} over c={best.cell.concurrency}: " + (
                f"plateau (gain under {settings.plateau:.0%}), stop raising concurrency"
                if stop
                else "raise concurrency"
            )
        if problem is None:
            scored = Scored(cell, result, trial.phase == "full")
            good.append(scored)
            if best is None or result.tok_per_s > best.result.tok_per_s:
                best = scored
            if not stop and cell is lane[-1]:
                verdict = verdict.replace("raise concurrency", "end of the concurrency list")
            elif not stop and only_queues_beyond(cell):
                stop = True
                verdict = verdict.replace(
                    "raise concurrency",
                    f"{cell.concurrency} clients for {slots(cell)} slot(s), more would only "
                    "queue: stop raising concurrency",
                )
        bench.record(trial, result, verdict)
        if stop:
            break
    return sorted(good, key=lambda s: s.result.tok_per_s, reverse=True)


async def search(space: Sequence[Cell], settings: SearchSettings, bench: Bench) -> SearchResult:
    """Ladders for every lane, then full cells for the best probes; the fastest full cell wins."""
    all_lanes = lanes(space)
    probes: list[Scored] = []
    for done, lane in enumerate(all_lanes, 1):
        probes += await climb(lane, settings, bench)
        bench.expect(outlook(all_lanes[done:], space, settings))
    if not probes:
        return SearchResult(None, "no probe ran within the bounds without failures")
    ranked = sorted(probes, key=lambda s: s.result.tok_per_s, reverse=True)
    finalists = ranked[: settings.finalists]
    dropped = {lane_of(s.cell) for s in ranked} - {lane_of(s.cell) for s in finalists}
    bench.note(
        "finalists: "
        + ", ".join(f"{describe(s.cell)} ({s.result.tok_per_s:.0f} tok/s)" for s in finalists)
        + (f"; {len(dropped)} layout(s) dropped at their probes" if dropped else "")
    )
    confirmed, running = await _confirm(ranked, settings, bench, lane_of(all_lanes[-1][0]))
    if settings.repeats > 1:
        confirmed = await _settle(confirmed, settings, bench, running)
    if not confirmed:
        return SearchResult(None, "no finalist's full cell ran within the bounds without failures")
    return SearchResult(max(confirmed, key=lambda s: s.result.tok_per_s))


def contenders(runs: dict[Cell, list[Measurement]]) -> list[Cell]:
    """The cells not told apart from the best (by mean) by their 95 % intervals: the best
    itself, and every cell whose interval overlaps its own or that has none yet."""
    spans = {cell: interval([r.tok_per_s for r in results]) for cell, results in runs.items()}
    best = max(spans, key=lambda cell: spans[cell].mean)
    return [
        cell
        for cell, span in spans.items()
        if cell == best or span.low is None or spans[best].low is None or span.overlaps(spans[best])
    ]


async def _settle(
    confirmed: Sequence[Scored], settings: SearchSettings, bench: Bench, running: object
) -> list[Scored]:
    """Measure the finalists again while the best is unclear and the budget allows, each round
    at most `halved` the last one's cells: the contenders with the best means. Record each
    finalist once, with the mean of its measurements; one whose new measurement fails or
    breaks a bound is out."""
    runs = {s.cell: [s.result] for s in confirmed}
    out: dict[Cell, str] = {}
    rounds, size = 1, len(runs)
    while True:
        alive = {cell: results for cell, results in runs.items() if cell not in out}
        if not alive:
            break
        tied = contenders(alive)
        ranked = sorted(tied, key=lambda cell: fmean(r.tok_per_s for r in runs[cell]), reverse=True)
        again = [cell for cell in ranked if len(runs[cell]) < settings.repeats][: halved(size)]
        if len(tied) == 1 or not again or rounds == settings.repeats:
            bench.note(f"after {rounds} round(s): " + _standing(tied, runs))
            break
        rounds, size = rounds + 1, len(again)
        left_out = [
            cell for cell in tied if cell not in again and len(runs[cell]) < settings.repeats
        ]
        if left_out:
            bench.note(
                f"round {rounds}: halving measures the best {len(again)} by mean; not "
                + ", ".join(f"{describe(c)} ({len(runs[c])} so far)" for c in left_out)
            )
        bench.expect(_rounds_ahead(again, runs, settings.repeats))
        for cell in in_layout_order(again, lambda cell: cell, running):
            result = await bench.measure(Trial(cell, "full"))
            running = lane_of(cell)
            runs[cell].append(result)
            problem = flaw(result, settings)
            if problem is not None:
                out[cell] = problem
    bench.expect([])  # the later rounds allowed for that did not run: the bar ends full
    settled = []
    for cell, results in runs.items():
        mean = Measurement.mean_of(results)
        span = interval([r.tok_per_s for r in results])
        ci = f", 95 % CI {span.low:.0f}-{span.high:.0f}" if span.low is not None else ""
        label = (
            f"finalist: mean of {len(results)} full measurement(s), {mean.tok_per_s:.0f} tok/s{ci}"
        )
        if cell in out:
            bench.record(Trial(cell, "full"), results[-1], f"{label}: {out[cell]}, out")
        else:
            bench.record(Trial(cell, "full"), mean, label)
            settled.append(Scored(cell, mean, True))
    return settled


def _standing(tied: Sequence[Cell], runs: dict[Cell, list[Measurement]]) -> str:
    if len(tied) == 1:
        return "the best is clear"
    once = [describe(cell) for cell in tied if len(runs[cell]) == 1]
    return f"the budget is spent, {len(tied) - len(once)} finalists tie within 95 % intervals" + (
        f"; measured once, so not told apart: {', '.join(once)}" if once else ""
    )


def _rounds_ahead(
    again: Sequence[Cell], runs: dict[Cell, list[Measurement]], repeats: int
) -> list[Cell]:
    """This round's cells and the most the rounds after it may measure, should they all stay
    tied (halving keeps the best by mean, taken here in this round's order)."""
    taken = {cell: len(runs[cell]) for cell in again}
    ahead: list[Cell] = []
    current = list(again)
    while current:
        ahead += current
        for cell in current:
            taken[cell] += 1
        current = [cell for cell in current if taken[cell] < repeats][: halved(len(current))]
    return ahead


async def _confirm(
    ranked: Sequence[Scored], settings: SearchSettings, bench: Bench, running: object
) -> tuple[list[Scored], object]:
    """Full cells for the best `finalists` probes, and the lane left running; one that fails
    or breaks a bound hands its place to the next best probe. Each batch runs layout by
    layout, the one whose servers are still running first, so no layout starts twice in a
    batch."""
    rank = {id(s): number for number, s in enumerate(ranked, 1)}
    queue = list(ranked)
    confirmed: list[Scored] = []
    while queue and len(confirmed) < settings.finalists:
        batch, queue = (
            queue[: settings.finalists - len(confirmed)],
            queue[settings.finalists - len(confirmed) :],
        )
        later = finalist_rounds([s.cell for s in confirmed + batch], settings)[1:]
        bench.expect([s.cell for s in batch if not s.full] + [c for cells in later for c in cells])
        for candidate in in_layout_order(batch, lambda s: s.cell, running):
            if candidate.full:
                confirmed.append(candidate)  # its probe already ran at full length
                continue
            trial = Trial(candidate.cell, "full")
            result = await bench.measure(trial)
            running = lane_of(candidate.cell)
            label = (
                f"finalist: probe #{rank[id(candidate)]} ({candidate.result.tok_per_s:.0f} tok/s)"
            )
            problem = flaw(result, settings)
            if problem is None:
                confirmed.append(Scored(candidate.cell, result, True))
                if settings.repeats == 1:  # else recorded once settled, with its mean
                    bench.record(trial, result, label)
            else:
                bench.record(trial, result, f"{label}: {problem}, the next best probe stands in")
    return confirmed, running


Item = TypeVar("Item")


def in_layout_order(
    items: Sequence[Item], cell_of: Callable[[Item], Cell], running: object
) -> list[Item]:
    """The items grouped by lane, the running lane's first, each group in the given order:
    every lane's servers start at most once for them."""
    groups: dict[object, list[Item]] = {}
    for item in items:
        groups.setdefault(lane_of(cell_of(item)), []).append(item)
    ordered = sorted(groups.items(), key=lambda group: group[0] != running)
    return [item for _, group in ordered for item in group]
