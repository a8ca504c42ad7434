"""The memory pre-flight over small GGUF files written with gguf's own writer: the header facts,
the arithmetic (worked out by hand in each test), bad files, and a sweep cell it skips."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import psutil
import pynvml
import pytest

from tests.conftest import free_port_block
from tui_lab import cli
from tui_lab.engine import preflight, standing_cluster, telemetry
from tui_lab.engine.config import LabConfig, Layout, LoadSettings
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Notice
from tui_lab.engine.preflight import ServerAsk, check, estimate, read_model
from tui_lab.engine.results import ResultsWriter, read_rows
from tui_lab.engine.runs import ServerOptions, single
from tui_lab.engine.sweep import PlanRunner, cell_row

MiB = 1024 * 1024
# The small model: 4 layers, 8 query heads of 32 (embedding 256), 2 KV heads, 1000 tokens.
# Tensor data: F32 64x32 = 8192 B, F16 100 = 200 B, Q8_0 64 elements = 2 blocks x 34 B = 68 B.
WEIGHTS = 8192 + 200 + 68


def write_model(path: Path, *, head_count_kv: object = 2, key_value: bool = False) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(4)
    writer.add_head_count(8)
    if isinstance(head_count_kv, list):
        writer.add_array("llama.attention.head_count_kv", head_count_kv)
    else:
        writer.add_head_count_kv(head_count_kv)
    writer.add_embedding_length(256)
    writer.add_context_length(2048)
    if key_value:
        writer.add_key_length(64)
        writer.add_value_length(48)
    writer.add_token_list([f"t{i}" for i in range(1000)])
    writer.add_tensor("a", np.zeros((64, 32), dtype=np.float32))
    writer.add_tensor("b", np.zeros(100, dtype=np.float16))
    writer.add_tensor(
        "c", np.zeros((1, 68), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "small.gguf")


def test_header_facts_match_the_gguf_packages_own_reader(small_model: Path) -> None:
    facts = read_model(small_model)
    reader = gguf.GGUFReader(str(small_model))
    assert facts.weights_bytes == WEIGHTS == sum(int(t.n_bytes) for t in reader.tensors)
    assert facts.architecture == "llama"
    assert facts.n_layer == 4
    assert facts.kv_heads == (2, 2, 2, 2)
    assert (facts.key_length, facts.value_length) == (32, 32)  # 256 / 8 heads
    assert facts.n_vocab == 1000 == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert facts.context_length == 2048
    assert facts.sliding_window is None


def test_explicit_head_sizes_and_per_layer_kv_heads(tmp_path: Path) -> None:
    facts = read_model(write_model(tmp_path / "m.gguf", head_count_kv=[1, 2, 4, 8], key_value=True))
    assert (facts.key_length, facts.value_length) == (64, 48)
    assert facts.kv_heads == (1, 2, 4, 8)
    assert facts.n_head_kv == 8


def test_default_model_header_is_read_in_well_under_a_second(model: Path) -> None:
    """GGUFReader takes 18 s on this box for the default model's 262,144-token vocabulary."""
    preflight._read_model.cache_clear()
    started = time.monotonic()
    facts = read_model(model)
    assert time.monotonic() - started < 2.0
    assert facts.n_vocab == 262144 and facts.n_layer == 18 and facts.sliding_window == 512


def test_estimate_arithmetic(small_model: Path) -> None:
    facts = read_model(small_model)
    ask = ServerAsk.of(Layout(instances=3, parallel=4, ctx_size=2048), facts)
    shared = estimate(facts, ask, weights_shared=True)
    # KV: 2048 tokens x 4 layers x 2 heads x (32 + 32) x 2 bytes (f16) = 2,097,152
    assert shared.kv_bytes == 2_097_152
    # overhead: 96 MiB + 10 % of 8460 (846) + 1000 tokens x 4 B x 4 slots (16,000)
    assert shared.overhead_bytes == 96 * MiB + 846 + 16_000
    assert shared.per_instance == WEIGHTS + 2_097_152 + 96 * MiB + 846 + 16_000
    # RAM with mmap: one copy of the weights for the three instances
    assert shared.total == WEIGHTS + 3 * (2_097_152 + 96 * MiB + 846 + 16_000)
    assert estimate(facts, ask, weights_shared=False).total == 3 * shared.per_instance


def test_extra_arguments_change_what_is_asked(small_model: Path) -> None:
    facts = read_model(small_model)
    args = ("-ctk", "q8_0", "--cache-type-v=q4_0", "-c", "1024", "-np", "2", "-ngl", "0")
    ask = ServerAsk.of(Layout(1, 4, 4096, extra_args=args), facts)
    assert (ask.parallel, ask.ctx_size, ask.offload, ask.mapped) == (2, 1024, False, True)
    # 1024 tokens x 4 layers x 2 heads x (32 x 34/32 B (q8_0) + 32 x 18/32 B (q4_0)) = 425,984
    assert estimate(facts, ask, True).kv_bytes == 1024 * 8 * (34 + 18) == 425_984
    assert not ServerAsk.of(Layout(1, 1, 256, extra_args=("--no-mmap",)), facts).mapped
    assert not ServerAsk.of(Layout(1, 1, 256, extra_args=("-lm", "none")), facts).mapped
    assert not ServerAsk.of(Layout(1, 1, 256, extra_args=("--device", "none")), facts).offload
    assert ServerAsk.of(Layout(1, 1, 0), facts).ctx_size == 2048  # 0: the model's context


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("-ctk", "q9"), "'q9' is not a KV cache type"),
        (("-c", "lots"), "--ctx-size 'lots' is not a whole number"),
    ],
)
def test_bad_extra_arguments_are_one_line(
    small_model: Path, args: tuple[str, ...], words: str
) -> None:
    facts = read_model(small_model)
    with pytest.raises(LabError, match=words):
        estimate(facts, ServerAsk.of(Layout(1, 1, 256, extra_args=args), facts), True)


def test_bad_model_files_name_the_path(tmp_path: Path, small_model: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(LabError, match=f"model not readable: {missing}"):
        read_model(missing)
    text = tmp_path / "text.gguf"
    text.write_text("not a model at all")
    with pytest.raises(LabError, match=f"not a readable GGUF file: {text} \\(bad magic"):
        read_model(text)
    cut = tmp_path / "cut.gguf"
    data = small_model.read_bytes()
    # Cut in the counts, in the metadata, and 40 bytes short: into the last tensor's 68 bytes
    # (the writer pads it with 28 bytes to the 32-byte alignment).
    for size in (6, 200, len(data) - 40):
        cut.write_bytes(data[:size])
        with pytest.raises(LabError, match=f"not a readable GGUF file: {cut}"):
            read_model(cut)


def test_ram_budget_is_what_psutil_calls_available(small_model: Path) -> None:
    verdict = check(small_model, Layout(1, 1, 256, extra_args=("-ngl", "0")))
    assert verdict.budget.where == "RAM"
    assert verdict.budget.detail == "available RAM"
    assert abs(verdict.budget.free_bytes - psutil.virtual_memory().available) < 256 * MiB
    assert verdict.fits and verdict.estimate.weights_shared


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(telemetry, "APPLE_SILICON", False)
    monkeypatch.setattr(preflight, "APPLE_SILICON", False)
    preflight._gpu_probe.cache_clear()
    yield
    preflight._gpu_probe.cache_clear()


def test_no_nvml_compares_with_ram_and_says_why(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None, small_model: Path
) -> None:
    def fail() -> None:
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    verdict = check(small_model, Layout(1, 1, 256))
    assert verdict.budget.where == "RAM"
    assert verdict.budget.detail == "available RAM (no NVIDIA GPU: NVML library not found)"


def test_gpu_budget_is_the_free_memory_of_every_gpu_and_weights_are_per_instance(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None, small_model: Path
) -> None:
    memory = {0: (8 * 1024 * MiB, 1024 * MiB), 1: (4 * 1024 * MiB, 3 * 1024 * MiB)}  # total, used
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 2)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: index)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda h: f"Card {h}")
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetMemoryInfo",
        lambda h: SimpleNamespace(total=memory[h][0], used=memory[h][1]),
    )
    verdict = check(small_model, Layout(2, 1, 256))
    assert verdict.budget.where == "GPU"
    assert verdict.budget.free_bytes == 7 * 1024 * MiB + 1024 * MiB
    assert "GPU0 Card 0, GPU1 Card 1" in verdict.budget.detail
    assert not verdict.estimate.weights_shared
    assert verdict.estimate.total == 2 * verdict.estimate.per_instance


async def test_a_sweep_cell_that_cannot_fit_is_skipped_with_its_reason(
    small_model: Path, tmp_path: Path
) -> None:
    """No server is started (the binary does not exist); the row keeps every column."""
    base = free_port_block(2)
    lab = LabConfig(
        server_bin=tmp_path / "no-such-llama-server",
        model=small_model,
        nginx_bin=None,
        base_port=base,
        nginx_port=base + 1,
        continue_on_error=False,  # a skip is a verdict, not an error: the sweep still goes on
    )
    plan = single(LoadSettings(n_predict=16), ServerOptions(ctx_per_slot=10**12))
    events: list[object] = []
    writer = ResultsWriter(tmp_path / "results", plan.run, {}, {})
    outcome = await PlanRunner(
        plan, lab, LoadSettings(n_predict=16), events.append, tmp_path, writer
    ).run()
    writer.close()
    (row,) = outcome.rows
    assert str(row["error"]).startswith("skipped: does not fit: 1 instance(s) need ")
    assert list(row) == list(cell_row(plan, 1, plan.cells[0], None, None, "x"))
    assert read_rows(writer.jsonl_path)[0]["error"] == row["error"]
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.level for n in notices] == ["warning"]
    assert "cell 1/1 skipped: does not fit" in notices[0].text


def test_cli_preflight_exit_codes(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["preflight", "--model", str(model), "--instances", "1", "--parallel", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "verdict      fits" in out and "available RAM" in out
    assert cli.main(["preflight", "--instances", "100000"]) == 1
    assert "does NOT fit" in capsys.readouterr().out
    assert cli.main(["preflight", "--ctx-size", str(10**10)]) == 1
    assert cli.main(["preflight", "--model", "/no/such/model.gguf"]) == 2
    assert capsys.readouterr().err == "llamalab: model not found: /no/such/model.gguf\n"
    assert cli.main(["preflight", "--parallel", "x"]) == 2


def test_cluster_start_refuses_a_cluster_that_cannot_fit(
    model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = free_port_block(3)
    ports = ["--base-port", str(base), "--nginx-port", str(base + 2)]
    huge = ["--instances", "2", "--ctx-per-slot", str(10**9), *ports]
    assert cli.main(["cluster", "start", *huge]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llamalab: cluster not started, does not fit: 2 instance(s) need ")
    assert err.endswith("(--no-preflight starts it anyway)\n")
    assert standing_cluster.read_state() is None  # no supervisor was started
