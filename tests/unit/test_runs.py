"""The six runs' plans: which cells, in which order, with which layouts."""

from __future__ import annotations

import itertools

from tui_lab.engine.plan.config import LoadSettings
from tui_lab.engine.plan.runs import (
    ServerOptions,
    concurrent,
    full_sweep,
    round_robin_sweep,
    single,
    threads_sweep,
)

LOAD = LoadSettings(n_predict=16)
OPTS = ServerOptions()


def test_full_sweep_keeps_cells_of_one_layout_together_so_servers_are_reused() -> None:
    plan = full_sweep((1, 2), (1, 4), (1, 8), LOAD, OPTS)
    assert len(plan.cells) == 8
    layouts = [c.layout for c in plan.cells]
    changes = sum(1 for a, b in itertools.pairwise(layouts) if a != b)
    assert changes == 3  # four layouts, each started once
    assert all(c.layout.proxied for c in plan.cells)
    assert [c.concurrency for c in plan.cells[:2]] == [1, 8]


def test_full_sweep_with_batch_and_balance_dimensions() -> None:
    plan = full_sweep(
        (1,), (2,), (4,), LOAD, OPTS, (None, 512), (None,), ("round_robin", "least_conn")
    )
    assert len(plan.cells) == 4
    assert {c.layout.batch_size for c in plan.cells} == {None, 512}
    assert [c.balance for c in plan.cells[:2]] == ["round_robin", "least_conn"]


def test_round_robin_sweep_sizes_context_for_the_largest_n_predict() -> None:
    plan = round_robin_sweep(2, 4, (16, 512), (1, 8), "round_robin", LOAD, OPTS)
    assert len({c.layout for c in plan.cells}) == 1
    assert plan.cells[0].layout.ctx_per_slot >= 512 + 16
    assert sorted({c.n_predict for c in plan.cells}) == [16, 512]


def test_threads_sweep_varies_only_server_threads_on_one_direct_server() -> None:
    plan = threads_sweep((1, None), (2, 8), parallel=4, concurrency=4, load=LOAD, opts=OPTS)
    assert len(plan.cells) == 4
    assert all(not c.layout.proxied and c.layout.instances == 1 for c in plan.cells)
    assert {(c.layout.threads, c.layout.threads_http) for c in plan.cells} == {
        (1, 2),
        (1, 8),
        (None, 2),
        (None, 8),
    }


def test_requests_default_to_a_multiple_of_concurrency() -> None:
    plan = concurrent(4, 8, LoadSettings(requests_per_client=3), OPTS)
    assert plan.cells[0].requests == 24
    assert single(LoadSettings(), OPTS).cells[0].requests == 1
    assert plan.cells[0].params()["balance"] == "direct"


def test_http_threads_cover_each_instances_share_of_the_largest_concurrency() -> None:
    """Idle keep-alive connections pin llama-server HTTP threads; too few threads made
    requests wait 5 s in the listen backlog (seen: 13.7 s for 8 tokens)."""
    plan = full_sweep((2,), (4,), (1, 64), LOAD, OPTS)
    assert {c.layout.threads_http for c in plan.cells} == {32 + 8}
    assert single(LOAD, OPTS).cells[0].layout.threads_http == 1 + 8
    explicit = full_sweep((2,), (4,), (64,), LOAD, ServerOptions(threads_http=5))
    assert explicit.cells[0].layout.threads_http == 5
