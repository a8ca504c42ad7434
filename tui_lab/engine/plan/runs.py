"""The six runs of the original lab, each a plan: an ordered list of cells; and the adaptive
sweep, whose plan is the space of cells its search picks from.

Cells are ordered server-side parameters outermost, so consecutive cells share a layout and the
executor restarts servers only when a server-side parameter changes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tui_lab.engine.plan.config import (
    PROMPT_TOKEN_BUDGET,
    Balance,
    Cell,
    Layout,
    LoadSettings,
    Placement,
    Threads,
    computed_ctx_size,
    default_threads_http,
)
from tui_lab.engine.plan.search import SearchSettings

RUN_NAMES = ("single", "concurrent", "round-robin")
SWEEP_NAMES = ("threads", "round-robin", "full", "adaptive")


@dataclass(frozen=True)
class Plan:
    run: str  # e.g. "test-single", "sweep-full": names the results files
    cells: tuple[Cell, ...]
    search: SearchSettings | None = None  # adaptive: cells are a space to search, not a list
    repeats: int = 1  # measurements of each cell, interleaved: the row holds their mean

    @property
    def requests(self) -> int:
        return sum(c.requests for c in self.cells) * self.repeats

    @property
    def max_concurrency(self) -> int:
        return max(c.concurrency for c in self.cells)


@dataclass(frozen=True)
class ServerOptions:
    """Server-side settings that are not swept in a given run."""

    threads: Threads = None
    threads_http: int | None = None
    batch_size: int | None = None
    ubatch_size: int | None = None
    ctx_per_slot: int | None = None
    extra_args: tuple[str, ...] = ()
    placement: Placement = "shared"
    gpus: tuple[int, ...] | None = None
    model: Path | None = None
    prompt_tokens: int = PROMPT_TOKEN_BUDGET  # the workload's longest prompt, sizing the context


def _layout(
    opts: ServerOptions,
    instances: int,
    parallel: int,
    n_predict_max: int,
    max_concurrency: int,
    *,
    proxied: bool,
    **kw: object,
) -> Layout:
    """A layout whose context fits the run's largest n_predict and whose HTTP threads fit its
    largest concurrency, so every cell of the run can reuse the same servers."""
    fields: dict[str, object] = {
        "threads": opts.threads,
        "threads_http": opts.threads_http,
        "batch_size": opts.batch_size,
        "ubatch_size": opts.ubatch_size,
        "placement": opts.placement,
        "gpus": opts.gpus,
        "model": opts.model,
    }
    fields.update(kw)
    if fields["threads_http"] is None:
        fields["threads_http"] = default_threads_http(parallel, instances, max_concurrency)
    return Layout(
        instances=instances,
        parallel=parallel,
        ctx_size=computed_ctx_size(parallel, n_predict_max, opts.ctx_per_slot, opts.prompt_tokens),
        extra_args=opts.extra_args,
        proxied=proxied,
        **fields,  # type: ignore[arg-type]
    )


def _cell(
    layout: Layout,
    balance: Balance,
    concurrency: int,
    n_predict: int,
    load: LoadSettings,
    rate: float | None = None,
) -> Cell:
    requests = load.requests_for(concurrency)
    return Cell(layout, balance, concurrency, n_predict, requests, load.workload.kind, rate)


def single(load: LoadSettings, opts: ServerOptions) -> Plan:
    """One server, one slot, one client: the baseline every other figure is compared with."""
    layout = _layout(opts, 1, 1, load.n_predict, 1, proxied=False)
    requests = load.workload.requests(load.requests or 1)
    cell = Cell(layout, "round_robin", 1, load.n_predict, requests, load.workload.kind)
    return Plan("test-single", (cell,))


def concurrent(
    parallel: int,
    concurrency: int,
    load: LoadSettings,
    opts: ServerOptions,
    rate: float | None = None,
) -> Plan:
    layout = _layout(opts, 1, parallel, load.n_predict, concurrency, proxied=False)
    cell = _cell(layout, "round_robin", concurrency, load.n_predict, load, rate)
    return Plan("test-concurrent", (cell,))


def round_robin(
    instances: int,
    parallel: int,
    concurrency: int,
    balance: Balance,
    load: LoadSettings,
    opts: ServerOptions,
    rate: float | None = None,
) -> Plan:
    layout = _layout(opts, instances, parallel, load.n_predict, concurrency, proxied=True)
    cell = _cell(layout, balance, concurrency, load.n_predict, load, rate)
    return Plan("test-round-robin", (cell,))


def threads_sweep(
    threads: Sequence[Threads],
    threads_http: Sequence[int | None],
    parallel: int,
    concurrency: int,
    load: LoadSettings,
    opts: ServerOptions,
    rate: float | None = None,
) -> Plan:
    """`--threads` x `--threads-http` on one server at a fixed client load."""
    cells = tuple(
        _cell(
            _layout(
                opts,
                1,
                parallel,
                load.n_predict,
                concurrency,
                proxied=False,
                threads=t,
                threads_http=th,
            ),
            "round_robin",
            concurrency,
            load.n_predict,
            load,
            rate,
        )
        for t, th in itertools.product(threads, threads_http)
    )
    return Plan("sweep-threads", cells)


def round_robin_sweep(
    instances: int,
    parallel: int,
    n_predicts: Sequence[int],
    concurrencies: Sequence[int],
    balance: Balance,
    load: LoadSettings,
    opts: ServerOptions,
    rates: Sequence[float | None] = (None,),
) -> Plan:
    """Max tokens x concurrency (x rate) on one standing cluster: the context fits the largest
    n_predict, so the servers start once for the whole sweep."""
    layout = _layout(opts, instances, parallel, max(n_predicts), max(concurrencies), proxied=True)
    cells = tuple(
        _cell(layout, balance, c, n, load, r)
        for n, c, r in itertools.product(n_predicts, concurrencies, rates)
    )
    return Plan("sweep-round-robin", cells)


def full_sweep(
    instances: Sequence[int],
    parallels: Sequence[int],
    concurrencies: Sequence[int],
    load: LoadSettings,
    opts: ServerOptions,
    batch_sizes: Sequence[int | None] = (None,),
    ubatch_sizes: Sequence[int | None] = (None,),
    balances: Sequence[Balance] = ("round_robin",),
    placements: Sequence[Placement] | None = None,
    models: Sequence[Path | None] | None = None,
    server_flags: Sequence[tuple[str, ...]] = ((),),
    rates: Sequence[float | None] = (None,),
) -> Plan:
    """Instances x parallel x concurrency (x rate x batch x ubatch x placement x balance), for each
    model and each combination of server-flag alternatives, always through nginx so one
    instance and sixteen are measured the same way. Models and flags are outermost: a model
    change reloads every server anyway, and the model is what users compare first."""
    cells = []
    for model, flags, n, p, b, ub, place in itertools.product(
        models or (opts.model,),
        server_flags,
        instances,
        parallels,
        batch_sizes,
        ubatch_sizes,
        placements or (opts.placement,),
    ):
        layout = _layout(
            opts,
            n,
            p,
            load.n_predict,
            max(concurrencies),
            proxied=True,
            batch_size=b,
            ubatch_size=ub,
            placement=place,
            model=model,
            server_flags=flags,
        )
        for bal, c, r in itertools.product(balances, concurrencies, rates):
            cells.append(_cell(layout, bal, c, load.n_predict, load, r))
    return Plan("sweep-full", tuple(cells))


def adaptive_sweep(search: SearchSettings, grid: Plan) -> Plan:
    """A full sweep's cells as the space the adaptive search picks from."""
    return replace(grid, run="sweep-adaptive", search=search)
