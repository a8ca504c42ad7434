"""The GPU check's own parts, without a GPU: the zero model rebuilt from a header, and the
summary's pairs and per-layout GPU memory, on hand-made inputs with known answers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from benchmarks.gpu_check.summary import (
    Cell,
    Layout,
    equal_slot_pairs,
    memory_by_layout,
    read_cells,
    read_samples,
)
from benchmarks.gpu_check.zero_model import rebuild, write_header
from tests.helpers import write_model
from tui_lab.engine.machine.gguf_header import read_model, tensor_data_span


def test_tensor_data_span_is_where_ggufs_reader_puts_the_data_and_the_files_end(
    tmp_path: Path,
) -> None:
    model = write_model(tmp_path / "m.gguf")
    data = model.read_bytes()
    start, end = tensor_data_span(data)
    assert start == gguf.GGUFReader(str(model)).data_offset
    assert end == len(data)
    assert tensor_data_span(data[:start]) == (start, end)  # the header alone is enough


def test_rebuilt_model_has_the_header_and_size_of_the_original_and_zero_weights(
    tmp_path: Path,
) -> None:
    ones = tmp_path / "ones.gguf"  # weights that are not zero, so that zeros show
    writer = gguf.GGUFWriter(str(ones), "llama")
    writer.add_block_count(4)
    writer.add_tensor("a", np.ones((64, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = ones.read_bytes()
    start, _ = tensor_data_span(original)

    write_header(ones, tmp_path / "h.gguf.gz")
    rebuild(tmp_path / "h.gguf.gz", tmp_path / "zero.gguf")

    zero = (tmp_path / "zero.gguf").read_bytes()
    assert len(zero) == len(original)
    assert (
        zero[:start] == original[:start] == gzip.decompress((tmp_path / "h.gguf.gz").read_bytes())
    )
    assert not any(zero[start:]) and any(original[start:])
    reader = gguf.GGUFReader(str(tmp_path / "zero.gguf"))
    assert [(t.name, t.n_bytes) for t in reader.tensors] == [("a", 64 * 32 * 4)]
    assert not (tmp_path / "zero.gguf.partial").exists()


def test_header_refuses_a_model_with_bytes_after_its_data(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.gguf")
    with model.open("ab") as fh:
        fh.write(b"\1" * 64)
    with pytest.raises(SystemExit, match="would not have the original size"):
        write_header(model, tmp_path / "h.gguf.gz")


def test_rebuilt_model_reads_as_the_same_model(tmp_path: Path) -> None:
    model = write_model(tmp_path / "m.gguf", key_value=True)
    write_header(model, tmp_path / "h.gguf.gz")
    rebuild(tmp_path / "h.gguf.gz", tmp_path / "zero.gguf")
    original, zero = read_model(model), read_model(tmp_path / "zero.gguf")
    assert zero.weights_bytes == original.weights_bytes
    assert (zero.n_layer, zero.kv_heads, zero.n_vocab) == (
        original.n_layer,
        original.kv_heads,
        original.n_vocab,
    )


def cell(instances: int, parallel: int, concurrency: int, tok: float | None) -> Cell:
    return Cell(Layout(instances, parallel), concurrency, tok, None, None, 0, None)


def test_pairs_are_layouts_of_equal_slots_at_equal_clients_more_instances_first() -> None:
    cells = [
        cell(1, 16, 64, 100.0),
        cell(1, 64, 64, 200.0),
        cell(4, 16, 64, 500.0),
        cell(1, 64, 256, 210.0),
        cell(4, 16, 256, None),  # failed
        cell(2, 64, 64, 300.0),
        cell(8, 16, 64, 250.0),
    ]
    pairs = equal_slot_pairs(cells)
    assert [(str(p.more.layout), str(p.fewer.layout), p.more.concurrency) for p in pairs] == [
        ("4x16", "1x64", 64),
        ("4x16", "1x64", 256),
        ("8x16", "2x64", 64),
    ]
    assert [p.more_wins for p in pairs] == [True, None, False]


def test_cells_read_energy_and_why_it_is_missing(tmp_path: Path) -> None:
    base = {"instances": 2, "parallel": 16, "concurrency": 64, "requests_failed": 0}
    results = tmp_path / "sweep.jsonl"
    rows = [
        {**base, "output_tok_per_s": 900.5, "joules_per_token": 0.25, "energy_reason": None},
        {**base, "output_tok_per_s": 800.0, "joules_per_token": None, "energy_reason": "no GPU"},
        {**base, "output_tok_per_s": None, "joules_per_token": None, "error": "no server"},
    ]
    results.write_text("".join(json.dumps(row) + "\n" for row in rows))
    measured, unknown, failed = read_cells(results)
    assert (measured.layout, measured.tok_per_s, measured.joules_per_token) == (
        Layout(2, 16),
        900.5,
        0.25,
    )
    assert measured.energy_reason is None
    assert (unknown.joules_per_token, unknown.energy_reason) == (None, "no GPU")
    assert (failed.tok_per_s, failed.error) == (None, "no server")


def test_gpu_memory_goes_to_each_layout_by_its_set_of_server_pids(tmp_path: Path) -> None:
    samples = tmp_path / "gpu-processes.csv"
    rounds = [
        ["10, /w/llama-server, 400"],  # 1x16
        ["10, /w/llama-server, 420", "99, python3, 5000"],  # another process: not a server
        ["20, /w/llama-server, 900"],  # 1x64
        ["30, /w/llama-server, 300"],  # 2x16 starting: one of two
        ["30, /w/llama-server, 350", "31, /w/llama-server, 340"],
        ["30, /w/llama-server, 360", "31, /w/llama-ser"],  # a line cut off
    ]
    samples.write_text(
        "".join(f"# {i}.5\n" + "".join(f"{line}\n" for line in r) for i, r in enumerate(rounds))
    )
    assert len(read_samples(samples)) == 8
    layouts = [Layout(1, 16), Layout(1, 64), Layout(2, 16), Layout(8, 64)]
    assert memory_by_layout(read_samples(samples), layouts) == {
        Layout(1, 16): [420],
        Layout(1, 64): [900],
        Layout(2, 16): [340, 350],
    }
