"""Resuming from files: the partly written last row, the CSV catching up with the JSONL, which
cells count as done, and files that belong to another plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui_lab.engine.errors import LabError
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.reader import (
    ResultsFileError,
    complete_length,
    drop_partial_tail,
    read_rows,
)
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.run_settings import RunSettings, build_plan
from tui_lab.engine.sweeps import resume
from tui_lab.engine.sweeps.runner import cell_row

SETTINGS = RunSettings(
    kind="sweep-full",
    instances="1",
    parallel="1,2",
    concurrency="1,2",
    n_predict="8",
    requests="4",
    model="/m/model.gguf",
    api_key="secret",
    detach=True,
)
LAB = LabConfig(server_bin=Path("/opt/llama-server"), model=Path("/m/model.gguf"), nginx_bin=None)


def sweep_files(tmp_path: Path, cells: list[int], error: str | None = None) -> ResultsWriter:
    plan = build_plan(SETTINGS)
    config = resume.recorded_config(SETTINGS, plan, LAB)
    with ResultsWriter(tmp_path, plan.run, config, {}) as writer:
        for index in cells:
            writer.write(cell_row(plan, index, plan.cells[index - 1], None, None, error))
    return writer


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (b'{"a": 1}\n{"a": 2}\n', 18),
        (b'{"a": 1}\n{"a": 2', 9),
        (b'{"a": 1}\n{"a": 2}', 17),  # whole, only its newline missing
        (b'{"a": 1}\n{"a": "\xc3', 9),  # cut inside a UTF-8 character
        (b"", 0),
    ],
)
def test_jsonl_partial_last_line(text: bytes, kept: int) -> None:
    assert complete_length(".jsonl", text) == kept


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (b"a,b\r\n1,2\r\n", 10),
        (b"a,b\r\n1,2\r\n3,", 10),
        (b'a,b\r\n1,"x\r\ny"\r\n', 15),  # a quoted field holding a line break is whole
        (b'a,b\r\n1,"x\r\n', 5),  # cut inside the quoted field, right after its line break
        (b"a,", 0),
    ],
)
def test_csv_partial_last_record(text: bytes, kept: int) -> None:
    assert complete_length(".csv", text) == kept


def test_drop_partial_tail_truncates_the_file_only_when_needed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2, "b"')
    assert drop_partial_tail(path) is True
    assert path.read_bytes() == b'{"a": 1}\n'
    assert drop_partial_tail(path) is False
    assert path.read_bytes() == b'{"a": 1}\n'


def test_a_corrupt_csv_record_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('a,b\r\n1,"x\r\ny"\r\n1,2,3\r\n4,5\r\n')
    with pytest.raises(ResultsFileError) as caught:
        read_rows(path)
    assert str(caught.value) == f"{path}:4: 3 fields where the header has 2"


def test_append_to_cuts_partial_rows_and_lets_the_csv_catch_up(tmp_path: Path) -> None:
    writer = sweep_files(tmp_path, [1, 2])
    # A crash after the JSONL got row 2 but before the CSV did, in the middle of row 3.
    csv_lines = writer.csv_path.read_bytes().split(b"\r\n")
    writer.csv_path.write_bytes(b"\r\n".join(csv_lines[:2]) + b"\r\n" + b"sweep-full,3,1")
    with writer.jsonl_path.open("a") as f:
        f.write('{"run": "sweep-full", "cell": 3, "inst')
    plan = build_plan(SETTINGS)
    with ResultsWriter.append_to(writer.meta_path) as again:
        again.write(cell_row(plan, 3, plan.cells[2], None, None, None))
    cells = [r["cell"] for r in read_rows(writer.jsonl_path)]
    assert cells == [1, 2, 3]
    assert [r["cell"] for r in read_rows(writer.csv_path)] == cells
    assert writer.csv_path.read_text().count("n_predict") == 1  # the header once


def test_recorded_config_keeps_neither_the_key_nor_the_detach_choice(tmp_path: Path) -> None:
    meta = json.loads(sweep_files(tmp_path, []).meta_path.read_text())
    assert "api_key" not in meta["config"]["settings"]
    assert "detach" not in meta["config"]["settings"]
    assert meta["config"]["server_bin"] == "/opt/llama-server"


def test_load_finds_the_cells_left_with_the_recorded_settings(tmp_path: Path) -> None:
    writer = sweep_files(tmp_path, [1, 3])
    resumed = resume.load(writer.csv_path, api_key="k2")
    assert resumed.done == {1, 3} and resumed.todo == [2, 4]
    assert resumed.plan == build_plan(SETTINGS)
    # The binaries it ran with, not what discovery finds today; the key given now.
    assert resumed.settings.server_bin == "/opt/llama-server"
    assert resumed.settings.model == "/m/model.gguf"
    assert resumed.settings.api_key == "k2" and not resumed.settings.detach


def test_failed_cells_count_as_done_unless_retried(tmp_path: Path) -> None:
    writer = sweep_files(tmp_path, [1, 2], error="llama-server #0 crashed")
    assert resume.load(writer.jsonl_path).todo == [3, 4]
    assert resume.load(writer.jsonl_path, retry_failed=True).todo == [1, 2, 3, 4]


def test_rows_of_another_plan_start_nothing(tmp_path: Path) -> None:
    writer = sweep_files(tmp_path, [1])
    row = read_rows(writer.jsonl_path)[0]
    writer.jsonl_path.write_text(json.dumps(row | {"cell": 7}) + "\n")
    with pytest.raises(LabError, match=r"row 1 is cell 7, not one of this sweep's 1\.\.4"):
        resume.load(writer.jsonl_path)
    writer.jsonl_path.write_text(json.dumps(row | {"concurrency": 2}) + "\n")
    with pytest.raises(
        LabError, match=r"\(cell 1\) has concurrency=2 where the sweep's plan has 1"
    ):
        resume.load(writer.jsonl_path)


def test_a_meta_file_that_cannot_resume_is_named(tmp_path: Path) -> None:
    writer = sweep_files(tmp_path, [1])
    meta = json.loads(writer.meta_path.read_text())
    meta["config"]["settings"]["parallel"] = "1,,x"
    writer.meta_path.write_text(json.dumps(meta))
    with pytest.raises(LabError, match="the recorded settings no longer make a plan: --parallel"):
        resume.load(writer.jsonl_path)
    writer.meta_path.write_text("{")
    with pytest.raises(LabError, match=r"meta\.json: not a JSON file"):
        resume.load(writer.jsonl_path)
    with pytest.raises(LabError, match="results file not found"):
        resume.load(tmp_path / "gone.jsonl")


def test_an_adaptive_sweep_is_started_again_not_resumed(tmp_path: Path) -> None:
    """Files with no row yet are how a detached sweep starts: that loads; one row and it
    would be a resume, which an adaptive search cannot do."""
    adaptive = SETTINGS.with_values(kind="sweep-adaptive")
    plan = build_plan(adaptive)
    with ResultsWriter(tmp_path, plan.run, resume.recorded_config(adaptive, plan, LAB), {}) as w:
        pass
    fresh = resume.load(w.jsonl_path)
    assert fresh.plan.search is not None and not fresh.done
    with ResultsWriter.append_to(w.meta_path) as again:
        again.write({"cell": 1})
    with pytest.raises(LabError, match="an adaptive sweep is started again, not resumed"):
        resume.load(w.jsonl_path)


def test_a_sweep_over_models_and_server_flags_resumes_with_the_same_cells(
    tmp_path: Path,
) -> None:
    dims = SETTINGS.with_values(
        model="/m/a.gguf|/m/b.gguf", server_dim="-fa on|-fa off", placement="shared,pinned"
    )
    plan = build_plan(dims)
    config = resume.recorded_config(dims, plan, LAB)
    assert config["model"] == "/m/a.gguf|/m/b.gguf"
    with ResultsWriter(tmp_path, plan.run, config, {}) as writer:
        for index in (1, 3, 9):
            writer.write(cell_row(plan, index, plan.cells[index - 1], None, None, None))
    resumed = resume.load(writer.jsonl_path)
    assert resumed.plan == plan and len(plan.cells) == 2 * 2 * 2 * 2 * 2
    assert resumed.done == {1, 3, 9}
    rows = read_rows(writer.jsonl_path)
    assert [(r["model"], r["server_flags"], r["placement"]) for r in rows] == [
        ("/m/a.gguf", "-fa on", "shared"),
        ("/m/a.gguf", "-fa on", "pinned"),
        ("/m/a.gguf", "-fa off", "shared"),
    ]


def test_rows_of_another_lab_version_are_not_appended_to(tmp_path: Path) -> None:
    writer = sweep_files(tmp_path, [1])
    row = read_rows(writer.jsonl_path)[0]
    del row["placement"]
    writer.jsonl_path.write_text(json.dumps(row) + "\n")
    with pytest.raises(LabError, match="written by another version of llamalab"):
        resume.load(writer.jsonl_path)
