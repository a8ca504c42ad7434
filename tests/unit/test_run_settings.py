"""The shared settings: one message for one mistake, wherever it was typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_lab.cli import parser
from tui_lab.engine.errors import LabError
from tui_lab.engine.machine.preflight import ModelFacts, ServerAsk
from tui_lab.engine.plan import search
from tui_lab.engine.plan.config import server_args
from tui_lab.engine.plan.search import SearchSettings
from tui_lab.engine.settings.run_settings import (
    RunSettings,
    build_plan,
    cluster_args,
    cluster_layout,
    defaults_for,
    estimate,
    field_error,
)


def test_field_error_names_the_problem_and_none_when_fine() -> None:
    s = RunSettings(kind="sweep-full", parallel="1,,x")
    assert field_error(s, "parallel") == "--parallel: empty item in '1,,x'; give values like 1,2,4"
    assert field_error(s, "instances") is None


def test_lists_are_refused_where_the_run_takes_one_value() -> None:
    s = RunSettings(kind="test-concurrent", parallel="1,4")
    assert field_error(s, "parallel") == "--parallel: this run takes one value, not a list"
    assert field_error(s.with_values(kind="sweep-full"), "parallel") is None


def test_fields_a_run_does_not_read_are_not_checked() -> None:
    s = RunSettings(kind="test-single", instances="garbage", batch_size="x")
    assert field_error(s, "instances") is None
    assert len(build_plan(s).cells) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "sweep-nothing"}, "unknown run 'sweep-nothing'"),
        ({"base_port": "http"}, "--base-port: 'http' is not a whole number"),
        ({"nginx_port": "99999"}, "--nginx-port: 99999 is not a TCP port"),
        ({"requests": "0"}, "--requests: 0 is below 1"),
        ({"request_timeout": "-1"}, "--request-timeout: must be above 0"),
        ({"api": "grpc"}, "--api: 'grpc' is not completion or chat"),
        ({"server_args": "-ngl '99"}, "--server-args: No closing quotation"),
        ({"api_key": "a b"}, "--api-key: use letters"),
        ({"balance": "ip_hash"}, "--balance: 'ip_hash' is not one of"),
        ({"ctx_per_slot": "32", "n_predict": "64"}, "cannot hold n_predict 64"),
    ],
)
def test_build_plan_rejects_bad_settings_in_one_line(changes: dict[str, str], message: str) -> None:
    with pytest.raises(LabError) as err:
        build_plan(RunSettings(**changes))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_preset_mappings_reject_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(LabError, match=r"preset.toml: unknown setting 'paralel'"):
        RunSettings.from_mapping({"paralel": "4"}, "preset.toml")
    with pytest.raises(LabError, match="stream must be true or false"):
        RunSettings.from_mapping({"stream": "yes"}, "preset.toml")
    s = RunSettings.from_mapping({"parallel": 4, "stream": True}, "preset.toml")
    assert s.parallel == "4" and s.stream is True
    assert RunSettings.from_mapping(s.to_mapping(), "x") == s


def test_estimate_counts_cells_layouts_and_requests() -> None:
    plan = build_plan(RunSettings(instances="1,2", parallel="1,4", concurrency="1,8"))
    assert estimate(plan) == "8 cells, 4 server layouts, 72 measured requests"


def test_estimate_with_repeats_counts_the_serpentine_passes_server_starts() -> None:
    settings = RunSettings(instances="1,2", parallel="1,4", concurrency="1,8", repeats="3")
    plan = build_plan(settings)
    assert plan.repeats == 3
    # 4 layouts a pass; the layout ending a pass starts the next: 3 x 3 + 1 starts
    assert estimate(plan) == "8 cells x 3 repeats, 10 server starts, 216 measured requests"


def test_an_adaptive_sweep_searches_the_full_sweeps_cells_with_its_own_knobs() -> None:
    grid = RunSettings(instances="1,2", parallel="1,4", concurrency="1,8")
    plan = build_plan(
        grid.with_values(kind="sweep-adaptive", plateau="5", finalists="3", max_p99_ms="900")
    )
    assert plan.run == "sweep-adaptive" and plan.cells == build_plan(grid).cells
    assert plan.search == SearchSettings(plateau=0.05, finalists=3, max_p99_ms=900.0)
    assert build_plan(grid).search is None
    assert estimate(plan) == (
        "searches 8 cells of 4 layouts: short probes, then full cells for the 3 best"
    )
    # Its knobs are not the full sweep's: a full sweep ignores them, typed or not.
    assert field_error(grid.with_values(plateau="x"), "plateau") is None
    assert field_error(grid.with_values(kind="sweep-adaptive", plateau="x"), "plateau") == (
        "--plateau: 'x' is not a number"
    )


def test_cluster_layout_sizes_slots_for_outside_clients() -> None:
    layout = cluster_layout(RunSettings(instances="3", parallel="8"))
    assert (layout.instances, layout.parallel, layout.proxied) == (3, 8, True)
    assert layout.ctx_per_slot >= 1024
    with pytest.raises(LabError, match="one value"):
        cluster_layout(RunSettings(instances="1,2"))


def test_server_dimensions_and_models_make_one_layout_per_combination() -> None:
    s = RunSettings(
        instances="1,2",
        parallel="2",
        concurrency="4",
        model="/m/a.gguf|/m/b.gguf",
        server_dim="-fa on|-fa off; |-ctk q8_0",
    )
    plan = build_plan(s)
    assert len(plan.cells) == 2 * 2 * 2 * 2
    combos = [(c.params()["model"], c.params()["server_flags"]) for c in plan.cells[:4]]
    assert combos == [
        ("/m/a.gguf", "-fa on"),
        ("/m/a.gguf", "-fa on"),  # the same flags at the next instance count
        ("/m/a.gguf", "-fa on -ctk q8_0"),
        ("/m/a.gguf", "-fa on -ctk q8_0"),
    ]
    assert {c.params()["model"] for c in plan.cells[8:]} == {"/m/b.gguf"}
    # Each combination is a layout of its own, so the adaptive search ladders each.
    assert len(search.lanes(plan.cells)) == 16
    flags = plan.cells[2].layout
    assert server_args(flags) == ("-fa", "on", "-ctk", "q8_0")


def test_a_server_dimension_is_counted_by_the_memory_preflight() -> None:
    plan = build_plan(RunSettings(instances="1", parallel="1", server_dim="|-ctk q8_0 -ctv q8_0"))
    facts = ModelFacts(Path("m"), "gemma3", 2, (1, 1), 256, 256, 1000, None, None, 10**8)
    plain, quantised = (ServerAsk.of(c.layout, facts) for c in plan.cells[::2])
    assert (plain.cache_k, quantised.cache_k, quantised.cache_v) == ("f16", "q8_0", "q8_0")


def test_threads_take_auto_default_and_counts_and_placement_is_a_full_sweep_list() -> None:
    plan = build_plan(defaults_for("sweep-threads").with_values(threads="1,auto,default"))
    assert [c.params()["threads"] for c in plan.cells] == [1, "auto", None]
    full = build_plan(RunSettings(instances="1", parallel="1", placement="shared,pinned"))
    assert [c.params()["placement"] for c in full.cells] == ["shared", "shared", "pinned", "pinned"]
    assert RunSettings().threads == "auto"
    for kind in ("test-round-robin", "sweep-round-robin"):
        s = RunSettings(kind=kind, instances="2", parallel="2", concurrency="4")
        assert field_error(s.with_values(placement="shared,pinned"), "placement") == (
            "--placement: this run takes one value, not a list"
        )
        assert field_error(s.with_values(server_dim="-fa on|-fa off"), "server_dim") is None


def test_repeated_model_and_server_dim_flags_join_into_their_settings() -> None:
    args = parser.build_parser().parse_args(
        ["sweep", "full", "--model", "a.gguf", "--model", "b.gguf", "--server-dim",
         "-fa on|-fa off", "--server-dim=-ctk f16|-ctk q8_0", "--placement", "pinned"]
    )  # fmt: skip
    s = parser.settings_from_args(args)
    assert s.model == "a.gguf|b.gguf"
    assert s.server_dim == "-fa on|-fa off;-ctk f16|-ctk q8_0"
    assert s.placement == "pinned"
    assert "--placement" in cluster_args(s.with_values(kind="test-round-robin"))
