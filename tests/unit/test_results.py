from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui_lab.cli.tables import format_table
from tui_lab.engine.errors import LabError
from tui_lab.engine.results.ranking import top_cells
from tui_lab.engine.results.reader import ResultsFileError, read_rows
from tui_lab.engine.results.writer import ResultsWriter

CONFIG = {"instances": [1, 2], "slots": [1, 4], "model": "gemma.gguf"}
MACHINE = {"hostname": "box", "gpus": [], "gpu_reason": "no NVIDIA driver"}


def _row(n: int, tps: float | None = 10.5) -> dict[str, object]:
    return {
        "instances": n,
        "slots": 4,
        "tokens_per_s": tps,
        "errors": None,
        "latency": {"p50": 0.25, "p99": 1.5},
    }


def test_rows_are_on_disk_before_close(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "out" / "deep", "grid", CONFIG, MACHINE)
    writer.write(_row(1))
    assert read_rows(writer.jsonl_path) == [_row(1)]
    assert len(writer.csv_path.read_text().splitlines()) == 2
    writer.write(_row(2, 20.25))
    with writer.csv_path.open(newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["instances", "slots", "tokens_per_s", "errors", "latency"]
    assert lines[1:] == [
        ["1", "4", "10.5", "", '{"p50": 0.25, "p99": 1.5}'],
        ["2", "4", "20.25", "", '{"p50": 0.25, "p99": 1.5}'],
    ]
    writer.close()


def test_jsonl_and_csv_agree(tmp_path: Path) -> None:
    rows = [_row(1), _row(2, None), _row(4, 3.0)]
    with ResultsWriter(tmp_path, "grid", CONFIG, MACHINE) as writer:
        for row in rows:
            writer.write(row)
    assert read_rows(writer.jsonl_path) == rows
    assert read_rows(writer.csv_path) == rows
    assert writer.jsonl_path.read_text().count("\n") == 3
    assert json.loads(writer.jsonl_path.read_text().splitlines()[1])["tokens_per_s"] is None


def test_later_rows_may_reorder_but_not_change_keys(tmp_path: Path) -> None:
    with ResultsWriter(tmp_path, "grid", CONFIG, MACHINE) as writer:
        writer.write({"a": 1, "b": 2})
        writer.write({"b": 4, "a": 3})
        with pytest.raises(ValueError, match=r"missing \['b'\], extra \['c'\]"):
            writer.write({"a": 5, "c": 6})
    assert read_rows(writer.csv_path) == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert len(read_rows(writer.jsonl_path)) == 2


def test_meta_holds_config_and_machine(tmp_path: Path) -> None:
    with ResultsWriter(tmp_path, "grid", CONFIG, MACHINE) as writer:
        meta = json.loads(writer.meta_path.read_text())
    assert meta["config"] == CONFIG
    assert meta["machine"] == MACHINE
    assert meta["sweep_name"] == "grid"
    assert (meta["csv"], meta["jsonl"]) == (writer.csv_path.name, writer.jsonl_path.name)


def test_stems_are_unique_and_timestamped(tmp_path: Path) -> None:
    writers = [ResultsWriter(tmp_path, "grid", CONFIG, MACHINE) for _ in range(3)]
    for writer in writers:
        writer.close()
    stems = [w.stem for w in writers]
    assert len(set(stems)) == 3
    base = stems[0]
    assert base.startswith("grid-") and base.endswith("Z") and "T" in base
    # All three normally fall in the same second; then the suffixes are -2 and -3.
    if all(s.startswith(base) for s in stems):
        assert stems[1:] == [f"{base}-2", f"{base}-3"]
    assert writers[2].csv_path == tmp_path / f"{stems[2]}.csv"
    assert writers[2].meta_path == tmp_path / f"{stems[2]}.meta.json"


def test_truncated_last_jsonl_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert read_rows(path) == [{"a": 1}, {"a": 2}]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert read_rows(path) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("bad", ['{"a": ', "[1, 2]", "garbage"])
def test_corrupt_middle_jsonl_line_names_path_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(f'{{"a": 1}}\n\n{bad}\n{{"a": 3}}\n')
    with pytest.raises(ResultsFileError) as caught:
        read_rows(path)
    assert str(caught.value) == f"{path}:3: not a JSON object"
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, LabError)


def test_truncated_last_csv_row_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("a,b\r\n1,2\r\n3,")
    assert read_rows(path) == [{"a": 1, "b": 2}]


def test_csv_cells_come_back_typed(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('i,f,e,s,n,j\r\n-3,2.5,1e-3,abc,,"[1, {""k"": 2}]"\r\n')
    assert read_rows(path) == [
        {"i": -3, "f": 2.5, "e": 0.001, "s": "abc", "n": None, "j": [1, {"k": 2}]}
    ]


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match=r"missing\.jsonl"):
        read_rows(tmp_path / "missing.jsonl")
    other = tmp_path / "r.txt"
    other.write_text("")
    with pytest.raises(ResultsFileError, match=r"expected \.jsonl or \.csv"):
        read_rows(other)


finite = st.floats(allow_nan=False, allow_infinity=False)
cells = st.one_of(st.none(), st.integers(), finite, st.lists(st.integers(), max_size=3))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.fixed_dictionaries({"a": cells, "b": cells}), min_size=1, max_size=4))
def test_round_trip_property(tmp_path: Path, rows: list[dict[str, object]]) -> None:
    with ResultsWriter(tmp_path, "prop", CONFIG, MACHINE) as writer:
        for row in rows:
            writer.write(row)
    assert read_rows(writer.jsonl_path) == rows
    assert read_rows(writer.csv_path) == rows


ROWS: list[dict[str, object]] = [
    {"cell": "a", "tps": 10.0, "p99": 2},
    {"cell": "b", "tps": 30.0, "p99": 1},
    {"cell": "c", "tps": None, "p99": 3},
    {"cell": "d", "p99": 5},
    {"cell": "e", "tps": 20, "p99": 4},
    {"cell": "f", "tps": 30, "p99": "n/a"},
    {"cell": "g", "tps": float("nan"), "p99": True},
]


def _cells(rows: list[dict[str, object]]) -> list[object]:
    return [row["cell"] for row in rows]


def test_top_cells_order_and_count() -> None:
    assert _cells(top_cells(ROWS, "tps", "desc", 10)) == ["b", "f", "e", "a"]
    assert _cells(top_cells(ROWS, "tps", "asc", 2)) == ["a", "e"]
    assert _cells(top_cells(ROWS, "p99", "asc", 10)) == ["b", "a", "c", "e", "d"]
    assert top_cells(ROWS, "tps", "desc", 0) == []
    assert top_cells([], "anything", "desc", 3) == []


def test_top_cells_unknown_field_lists_numeric_fields() -> None:
    with pytest.raises(ResultsFileError) as caught:
        top_cells(ROWS, "tokens", "desc", 3)
    message = str(caught.value)
    assert "'tokens'" in message and "(numeric fields: tps, p99)" in message
    assert "\n" not in message
    with pytest.raises(ResultsFileError, match="'cell'"):
        top_cells(ROWS, "cell", "desc", 3)


def test_format_table_aligns_and_rounds() -> None:
    rows = [
        {"cell": "1x4", "tps": 1234.5678, "p50": 0.25, "n": 8, "tag": None},
        {"cell": "2x2-long", "tps": 99.999, "p50": 12.0, "n": 16, "tag": "best"},
    ]
    assert format_table(rows, ["cell", "tps", "p50", "n", "tag"]).splitlines() == [
        "cell         tps    p50   n  tag",
        "--------  ------  -----  --  ----",
        "1x4       1234.6   0.25   8  -",
        "2x2-long  100.00  12.00  16  best",
    ]
