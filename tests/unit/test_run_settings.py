"""The shared settings: one message for one mistake, wherever it was typed."""

from __future__ import annotations

import pytest

from tui_lab.engine.errors import LabError
from tui_lab.engine.run_settings import (
    RunSettings,
    build_plan,
    cluster_layout,
    estimate,
    field_error,
)
from tui_lab.engine.search import SearchSettings


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
