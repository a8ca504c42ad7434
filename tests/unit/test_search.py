"""The adaptive search against synthetic throughput surfaces: no servers, so every decision
(plateau, goodput bound, failures, halving) is checked against a known answer."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from tui_lab.engine.plan.config import Cell, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, full_sweep
from tui_lab.engine.plan.search import (
    Measurement,
    SearchResult,
    SearchSettings,
    Trial,
    lanes,
    rounds_of,
    search,
)

LOAD = LoadSettings(n_predict=32)
CONCURRENCIES = (1, 4, 16, 32, 64)


def saturating(cell: Cell) -> float:
    """tok/s grows with the busy slots (instances x parallel), each slot slower the more share
    a server: a CPU-like surface whose best layout is 2x4 at concurrency >= 8."""
    n, p = cell.layout.instances, cell.layout.parallel
    busy = min(cell.concurrency, n * p)
    return 100 * busy / (1 + 0.15 * (p - 1)) / (1 + 0.25 * (n - 1))


@dataclass
class SyntheticBench:
    tok_per_s: Callable[[Cell], float] = saturating
    latency_ms: Callable[[Cell], float] = lambda c: 50.0 * c.concurrency
    failing: Callable[[Cell], Measurement | None] = lambda c: None
    probe_noise: float = 0.0  # probes read this fraction high, full cells exactly
    trials: list[tuple[Trial, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outlooks: list[tuple[int, list[Cell]]] = field(default_factory=list)  # (trials before, cells)

    async def measure(self, trial: Trial) -> Measurement:
        failed = self.failing(trial.cell)
        if failed is not None:
            return failed
        noise = 1 + self.probe_noise if trial.phase == "probe" else 1.0
        latency = self.latency_ms(trial.cell)
        return Measurement(self.tok_per_s(trial.cell) * noise, latency, latency / 4)

    def record(self, trial: Trial, result: Measurement, verdict: str) -> None:
        self.trials.append((trial, verdict))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def expect(self, cells: Sequence[Cell]) -> None:
        self.outlooks.append((len(self.trials), list(cells)))

    def measured(self, phase: str) -> list[tuple[int, int, int]]:
        return [
            (t.cell.layout.instances, t.cell.layout.parallel, t.cell.concurrency)
            for t, _ in self.trials
            if t.phase == phase
        ]


def space(instances=(1, 2), parallels=(1, 4, 16), concurrencies=CONCURRENCIES) -> list[Cell]:
    return list(full_sweep(instances, parallels, concurrencies, LOAD, ServerOptions()).cells)


def run(bench: SyntheticBench, settings: SearchSettings, cells: list[Cell]) -> SearchResult:
    return asyncio.run(search(cells, settings, bench))


def grid_best(cells: list[Cell], ok: Callable[[Cell], bool] = lambda c: True) -> float:
    return max(saturating(c) for c in cells if ok(c))


def test_ladder_stops_one_step_after_the_plateau() -> None:
    bench = SyntheticBench()
    cells = space(instances=(1,), parallels=(4,))
    result = run(bench, SearchSettings(plateau=0.03, finalists=1), cells)
    # 4 slots: c=1 -> c=4 gains 300%, c=16 gains nothing: stop there, never probe 32 or 64.
    assert bench.measured("probe") == [(1, 4, 1), (1, 4, 4), (1, 4, 16)]
    assert "plateau" in bench.trials[2][1] and "stop raising" in bench.trials[2][1]
    assert result.best is not None and result.best.cell.concurrency == 4
    assert result.best.full and result.best.cell.requests == LOAD.requests_for(4)


def test_probes_are_short_and_full_cells_are_the_grids_own() -> None:
    bench = SyntheticBench()
    cells = space()
    run(bench, SearchSettings(), cells)
    for trial, _ in bench.trials:
        if trial.phase == "probe":
            assert trial.cell.requests == trial.cell.concurrency
        else:
            assert trial.cell in cells


def test_search_finds_the_grid_best_with_a_fraction_of_its_requests() -> None:
    bench = SyntheticBench(probe_noise=0.02)
    cells = space()
    result = run(bench, SearchSettings(), cells)
    assert result.best is not None
    assert result.best.result.tok_per_s >= 0.97 * grid_best(cells)
    spent = sum(t.cell.requests for t, _ in bench.trials)
    assert spent <= 0.4 * sum(c.requests for c in cells)


def test_only_the_best_probes_get_full_cells() -> None:
    bench = SyntheticBench()
    result = run(bench, SearchSettings(finalists=3), space())
    assert len(bench.measured("full")) == 3
    # 2x16 at 32 and 64 tie at the top (a plateau), then 1x16 at 16 and above.
    assert set(bench.measured("full")) <= {(2, 16, 32), (2, 16, 64), (1, 16, 16), (1, 16, 32)}
    assert {(2, 16, 32), (2, 16, 64)} <= set(bench.measured("full"))
    assert result.best is not None and result.best.cell.layout.instances == 2
    assert bench.notes == [
        "finalists: 2x16 c=32 (788 tok/s), 2x16 c=64 (788 tok/s), 1x16 c=16 (492 tok/s); "
        "4 layout(s) dropped at their probes"
    ]


def test_goodput_bound_picks_the_fastest_cell_under_the_latency() -> None:
    bench = SyntheticBench()
    cells = space()
    result = run(bench, SearchSettings(max_p99_ms=250), cells)  # latency 50 ms x concurrency
    assert result.best is not None
    assert result.best.cell.concurrency == 4
    assert result.best.result.tok_per_s == grid_best(cells, lambda c: c.concurrency <= 5)
    assert all(t.cell.concurrency <= 16 for t, _ in bench.trials)  # c=16 broke the bound
    assert any("p99 latency 800 ms over the 250 ms bound" in v for _, v in bench.trials)


def test_ttft_bound_no_cell_within_it_gives_no_answer_and_says_why() -> None:
    result = run(SyntheticBench(), SearchSettings(max_ttft_ms=1), space())
    assert result.best is None
    assert "within the bounds" in result.why_none


def test_a_finalist_whose_full_cell_breaks_the_bound_hands_its_place_to_the_next_probe() -> None:
    # A full cell's latency is 1.5 x its probe's here: the best probe's full cell breaks 250 ms.
    bench = SyntheticBench(
        latency_ms=lambda c: 50.0 * c.concurrency * (1.0 if c.requests == c.concurrency else 1.5)
    )
    result = run(bench, SearchSettings(max_p99_ms=250, finalists=1), space((1,), (4,)))
    fulls = [(t.cell.concurrency, v) for t, v in bench.trials if t.phase == "full"]
    assert [c for c, _ in fulls] == [4, 1]
    assert fulls[0][1] == (
        "finalist: probe #1 (276 tok/s): p99 latency 300 ms over the 250 ms bound, "
        "the next best probe stands in"
    )
    assert fulls[1][1] == "finalist: probe #2 (69 tok/s)"
    assert result.best is not None and result.best.cell.concurrency == 1


def test_failed_requests_stop_the_ladder_and_a_layout_error_abandons_it() -> None:
    def failing(cell: Cell) -> Measurement | None:
        if cell.layout.parallel == 16:
            return Measurement(0.0, error="skipped: does not fit: 2 instance(s) need 9 GB")
        if cell.concurrency >= 16:
            return Measurement(50.0, 100.0, None, requests_failed=3)
        return None

    bench = SyntheticBench(failing=failing)
    result = run(bench, SearchSettings(), space())
    by_layout: dict[tuple[int, int], list[str]] = {}
    for trial, verdict in bench.trials:
        if trial.phase == "probe":
            key = (trial.cell.layout.instances, trial.cell.layout.parallel)
            by_layout.setdefault(key, []).append(verdict)
    assert by_layout[(1, 16)] == [
        "skipped: does not fit: 2 instance(s) need 9 GB: layout abandoned"
    ]
    assert by_layout[(2, 4)][-1] == "3 request(s) failed: stop raising concurrency"
    assert result.best is not None and result.best.cell.concurrency < 16


def test_probe_at_full_length_is_not_measured_twice() -> None:
    bench = SyntheticBench()
    cells = space(instances=(1,), parallels=(1,), concurrencies=(1, 2))
    one_each = [
        c.__class__(c.layout, c.balance, c.concurrency, c.n_predict, c.concurrency) for c in cells
    ]
    result = run(bench, SearchSettings(finalists=1), one_each)
    assert [t.phase for t, _ in bench.trials] == ["full", "full"]
    assert result.best is not None and result.best.full


def test_a_ladder_stops_at_twice_the_slots_unless_sessions_keep_to_one_instance() -> None:
    """More clients than twice the slots only queue: a surface that still rose beyond them
    (noise, on a real box) does not lead the ladder on, except under session balance."""
    rising = ramp({})
    cells = space(instances=(2,), parallels=(2,), concurrencies=(1, 4, 8, 16, 32))
    bench = SyntheticBench(tok_per_s=rising)
    run(bench, SearchSettings(plateau=0.0, finalists=1), cells)
    assert bench.measured("probe") == [(2, 2, 1), (2, 2, 4), (2, 2, 8)]
    assert bench.trials[2][1] == (
        "+16.7% over c=4: 8 clients for 4 slot(s), more would only queue: stop raising concurrency"
    )
    sessions = [replace(cell, balance="session") for cell in cells]
    bench = SyntheticBench(tok_per_s=rising)
    run(bench, SearchSettings(plateau=0.0, finalists=1), sessions)
    assert [c for _, _, c in bench.measured("probe")] == [1, 4, 8, 16, 32]


def test_lanes_group_layout_and_balance_in_plan_order() -> None:
    cells = list(
        full_sweep(
            (1, 2), (4,), (8, 1), LOAD, ServerOptions(), balances=("round_robin", "least_conn")
        ).cells
    )
    grouped = lanes(cells)
    assert len(grouped) == 4
    assert [[c.concurrency for c in lane] for lane in grouped] == [[1, 8]] * 4
    assert [lane[0].balance for lane in grouped] == ["round_robin", "least_conn"] * 2


def test_the_results_screen_best_of_an_adaptive_run_is_an_eligible_full_cell() -> None:
    from tui_lab.engine.results.ranking import best_cell

    rows: list[dict[str, object]] = [
        {"cell": 1, "output_tok_per_s": 300.0, "error": None, "phase": "probe", "eligible": True},
        {"cell": 2, "output_tok_per_s": 280.0, "error": None, "phase": "full", "eligible": False},
        {"cell": 3, "output_tok_per_s": 250.0, "error": None, "phase": "full", "eligible": True},
        {"cell": 4, "output_tok_per_s": 240.0, "error": None, "phase": "full", "eligible": True},
    ]
    assert best_cell(rows) == rows[2]
    assert best_cell([{"cell": 1, "output_tok_per_s": 9.0, "error": None}])  # a full sweep's row


def test_finalists_run_layout_by_layout_the_running_one_first() -> None:
    bench = SyntheticBench()
    # Lanes in plan order: 1x16, 1x4, 2x16, 2x4; 2x4 is probed last. The best five probes are
    # 2x16 c=32 and c=64, 1x16 c=16 and c=32, then 2x4 c=16.
    run(bench, SearchSettings(finalists=5), space(parallels=(16, 4)))
    fulls = [
        (t.cell.layout.instances, t.cell.layout.parallel)
        for t, _ in bench.trials
        if t.phase == "full"
    ]
    assert fulls == [(2, 4), (2, 16), (2, 16), (1, 16), (1, 16)]


def test_the_outlook_bounds_what_is_measured_after_it_and_is_exact_once_finalists_are_known() -> (
    None
):
    bench = SyntheticBench()
    cells = space()
    run(bench, SearchSettings(finalists=3), cells)
    assert len(bench.outlooks) == len(lanes(cells)) + 1  # one per ladder, one for the finalists
    for before, expected in bench.outlooks:
        after = [trial.cell for trial, _ in bench.trials[before:]]
        assert len(after) <= len(expected)
        assert sum(c.requests for c in after) <= sum(c.requests for c in expected)
    before, finalists = bench.outlooks[-1]
    assert finalists == [trial.cell for trial, _ in bench.trials[before:]]
    # Ladders stop early, so the outlook falls well below the first upper bound.
    first = sum(c.requests for c in bench.outlooks[0][1])
    assert sum(c.requests for c in finalists) < first


@dataclass
class JitteryBench(SyntheticBench):
    """Each cell's k-th measurement reads `jitter[k % len]` of its true figure: the noise of
    a shared box, known exactly."""

    jitter: tuple[float, ...] = (1.0, 0.99, 1.01)
    measures: list[Cell] = field(default_factory=list)

    async def measure(self, trial: Trial) -> Measurement:
        taken = sum(1 for c in self.measures if c == trial.cell)
        self.measures.append(trial.cell)
        base = await super().measure(trial)
        return replace(base, tok_per_s=base.tok_per_s * self.jitter[taken % len(self.jitter)])

    def full_measures(self) -> dict[tuple[int, int], int]:
        """(parallel, concurrency) -> how often its full cell was measured."""
        full = {trial.cell for trial, _ in self.trials if trial.phase == "full"}
        return {
            (cell.layout.parallel, cell.concurrency): self.measures.count(cell) for cell in full
        }


def ramp(top: dict[tuple[int, int], float]) -> Callable[[Cell], float]:
    """10 x parallel + concurrency, rising with both; `top` overrides some cells."""
    return lambda c: top.get(
        (c.layout.parallel, c.concurrency), 10.0 * c.layout.parallel + c.concurrency
    )


SMALL = dict(instances=(1,), parallels=(1, 2, 4), concurrencies=(1, 4, 16))
REPEATED = SearchSettings(plateau=0.0, finalists=3, repeats=3)


def test_repeats_stop_once_the_best_is_clear_of_the_other_finalists() -> None:
    bench = JitteryBench(tok_per_s=ramp({}))
    result = run(bench, REPEATED, space(**SMALL))
    assert result.best is not None
    assert (result.best.cell.layout.parallel, result.best.cell.concurrency) == (4, 16)
    # Round 2 halves the three finalists to the best two by mean: 56 [52-60] is then clear of
    # 44 [41-47], but not of 41, measured once (no interval); round 3 measures 56 and 41 again,
    # 41 falls clear, and 44 is not measured a third time.
    assert bench.full_measures() == {(4, 16): 3, (4, 4): 2, (4, 1): 2}
    assert "round 2: halving measures the best 2 by mean; not 1x4 c=1 (1 so far)" in bench.notes
    assert result.best.result.tok_per_s == pytest.approx(56.0)
    assert "after 3 round(s): the best is clear" in bench.notes
    full = [verdict for trial, verdict in bench.trials if trial.phase == "full"]
    assert len(full) == 3  # one row per finalist
    assert full[0].startswith("finalist: mean of 3 full measurement(s), 56 tok/s, 95 % CI ")


def test_repeats_go_on_for_the_tied_finalists_only_until_the_budget_is_spent() -> None:
    bench = JitteryBench(tok_per_s=ramp({(4, 16): 56.0, (4, 4): 55.0, (4, 1): 30.0}))
    result = run(bench, REPEATED, space(**SMALL))
    # finalists 56, 55 and 30 (1x4 at c=1): halving measures only the first two again, and
    # after three rounds (the budget) they still tie
    assert bench.full_measures() == {(4, 16): 3, (4, 4): 3, (4, 1): 1}
    assert (
        "after 3 round(s): the budget is spent, 2 finalists tie within 95 % intervals; "
        "measured once, so not told apart: 1x4 c=1"
    ) in bench.notes
    assert result.best is not None and result.best.cell.concurrency == 16
    # The progress totals end at what was measured: the rows and every measurement's requests.
    assert bench.outlooks[-1][1] == []


def test_finalist_rounds_halve_down_to_a_pair() -> None:
    sizes = {
        (finalists, repeats): rounds_of(SearchSettings(finalists=finalists, repeats=repeats))
        for finalists, repeats in ((3, 1), (3, 3), (5, 4), (8, 5), (1, 3), (2, 3))
    }
    assert sizes == {
        (3, 1): [3],
        (3, 3): [3, 2, 2],
        (5, 4): [5, 3, 2, 2],
        (8, 5): [8, 4, 2, 2, 2],
        (1, 3): [1],  # a lone finalist is the answer after its first full cell
        (2, 3): [2, 2, 2],
    }


def test_each_finalist_round_starts_on_the_servers_left_running() -> None:
    """Finalists in two layouts: a round that began on the other layout would start both
    layouts' servers again every round."""
    top = {(4, 16): 60.0, (2, 4): 59.0, (4, 4): 58.0}
    bench = JitteryBench(tok_per_s=ramp(top), jitter=(1.0, 0.9, 1.1))
    run(bench, replace(REPEATED, finalists=3), space(**SMALL))
    ladders = sum(1 for trial, _ in bench.trials if trial.phase == "probe")
    finals = [c.layout.parallel for c in bench.measures[ladders:]]
    switches = sum(1 for a, b in itertools.pairwise(finals) if a != b)
    # the ladders end on 1x4; round 1: 1x4 twice, then 1x2; round 2 starts on 1x2, then 1x4,
    # where round 3 stays: two switches, where the rounds' own order (by mean) would make four
    assert finals[0] == 4
    assert switches == 2


def test_without_repeats_a_finalist_is_measured_once() -> None:
    bench = JitteryBench(tok_per_s=ramp({}))
    run(bench, replace(REPEATED, repeats=1), space(**SMALL))
    assert bench.full_measures() == {(4, 16): 1, (4, 4): 1, (4, 1): 1}
