"""The memory pre-flight over small GGUF files written with gguf's own writer: the header facts,
the arithmetic (worked out by hand in each test), bad files, and a sweep cell it skips."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import gguf
import psutil
import pytest

from tests.fake_gpus import FakeGpu, GiB, install, no_nvml
from tests.helpers import write_model
from tui_lab.cli import main as cli
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import Notice
from tui_lab.engine.machine import gguf_header
from tui_lab.engine.machine.gguf_header import read_model
from tui_lab.engine.machine.preflight import (
    DoesNotFit,
    ServerAsk,
    check,
    estimate,
    largest,
    require_fit,
)
from tui_lab.engine.plan.config import LabConfig, Layout, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, single
from tui_lab.engine.processes import standing_cluster
from tui_lab.engine.processes.gpu_placement import place
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.sweeps.runner import PlanRunner, cell_row
from tui_lab.engine.units import human_bytes

MiB = 1024 * 1024
# The small model: 4 layers, 8 query heads of 32 (embedding 256), 2 KV heads, 1000 tokens.
# Tensor data: F32 64x32 = 8192 B, F16 100 = 200 B, Q8_0 64 elements = 2 blocks x 34 B = 68 B.
WEIGHTS = 8192 + 200 + 68


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
    gguf_header._read_model.cache_clear()
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


def test_no_nvml_compares_with_ram_and_says_why(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None, small_model: Path
) -> None:
    no_nvml(monkeypatch)
    verdict = check(small_model, Layout(1, 1, 256))
    assert verdict.budget.where == "RAM"
    assert verdict.budget.detail == "available RAM (no NVIDIA GPU: NVML library not found)"
    assert verdict.per_gpu == ()


def test_gpu_budget_is_the_free_memory_of_every_gpu_and_weights_are_per_instance(
    monkeypatch: pytest.MonkeyPatch, fresh_probe: None, small_model: Path
) -> None:
    install(
        monkeypatch,
        [
            FakeGpu("Card 0", total_bytes=8 * GiB, used_bytes=1 * GiB),
            FakeGpu("Card 1", total_bytes=4 * GiB, used_bytes=3 * GiB),
        ],
    )
    verdict = check(small_model, Layout(2, 1, 256))
    assert verdict.budget.where == "GPU"
    assert verdict.budget.free_bytes == 7 * GiB + 1 * GiB
    assert "GPU0 Card 0, GPU1 Card 1" in verdict.budget.detail
    assert not verdict.estimate.weights_shared
    assert verdict.estimate.total == 2 * verdict.estimate.per_instance


def need_of(model: Path, layout: Layout) -> int:
    """One instance's need on a GPU (its own weights), the figure every GPU test divides."""
    facts = read_model(model)
    return estimate(facts, ServerAsk.of(layout, facts), weights_shared=False).per_instance


def boards(monkeypatch: pytest.MonkeyPatch, *free: int) -> None:
    """NVML with one 80 GiB board per figure, each with that much free memory."""
    install(
        monkeypatch,
        [FakeGpu(f"Card {i}", 80 * GiB, 80 * GiB - size) for i, size in enumerate(free)],
    )


@pytest.mark.usefixtures("fresh_probe")
def test_spread_can_overflow_one_gpu_while_the_sum_fits(
    monkeypatch: pytest.MonkeyPatch, small_model: Path
) -> None:
    layout = Layout(3, 1, 256)
    need = need_of(small_model, layout)
    boards(monkeypatch, need * 3 // 2, need * 3 // 2)
    assert check(small_model, layout).fits  # shared: 3 needs in 3 needs of free memory
    verdict = check(small_model, layout, ((0,), (1,), (0,)))
    assert verdict.estimate.total <= verdict.budget.free_bytes
    assert not verdict.fits
    assert [(g.gpu.index, g.need_bytes, g.instances) for g in verdict.per_gpu] == [
        (0, 2 * need, (0, 2)),
        (1, need, (1,)),
    ]
    assert verdict.summary().endswith(
        f"; GPU0 needs {human_bytes(2 * need)} of {human_bytes(need * 3 // 2)} free"
    )
    with pytest.raises(DoesNotFit, match="; GPU0 needs "):
        require_fit(small_model, layout, ((0,), (1,), (0,)))


@pytest.mark.usefixtures("fresh_probe")
def test_shared_splits_each_instance_by_free_memory(
    monkeypatch: pytest.MonkeyPatch, small_model: Path
) -> None:
    """llama.cpp's default split: GPU0 with three times GPU1's free memory takes 3/4."""
    layout = Layout(2, 1, 256)
    need = need_of(small_model, layout)
    boards(monkeypatch, 3 * need, need)
    verdict = check(small_model, layout)
    on_0, on_1 = (g.need_bytes for g in verdict.per_gpu)
    assert on_0 == pytest.approx(2 * need * 3 / 4, abs=1)
    assert on_1 == pytest.approx(2 * need / 4, abs=1)
    assert verdict.fits
    spread = check(small_model, layout, ((0,), (1,)))
    assert spread.fits  # each instance alone on its own GPU: exactly enough on GPU1
    boards(monkeypatch, 3 * need, need - 1)
    assert check(small_model, layout).fits
    assert not check(small_model, layout, ((0,), (1,))).fits


@pytest.mark.usefixtures("fresh_probe")
def test_eight_gpus_report_a_line_each_and_the_worst_is_named(
    monkeypatch: pytest.MonkeyPatch, small_model: Path
) -> None:
    nine = Layout(9, 1, 256)
    need = need_of(small_model, nine)
    boards(monkeypatch, *[need * 6 // 5] * 8)
    eight = check(small_model, Layout(8, 1, 256), tuple((i,) for i in range(8)))
    assert eight.fits and len(eight.per_gpu) == 8
    wrapped = check(small_model, nine, (*((i,) for i in range(8)), (0,)))
    assert not wrapped.fits
    assert wrapped.worst_gpu() == wrapped.per_gpu[0]
    lines = wrapped.report()
    gpu_lines = [line for line in lines if line.startswith("GPU")]
    assert len(gpu_lines) == 8
    assert gpu_lines[0] == (
        f"GPU0         needs {human_bytes(2 * need)} of {human_bytes(need * 6 // 5)} free "
        "(Card 0; instance(s) 0, 8): does NOT fit"
    )
    assert gpu_lines[7].endswith("(Card 7; instance(s) 7)")
    assert lines[lines.index(gpu_lines[0]) - 1].startswith("free ")
    assert lines[-1] == "verdict      does NOT fit"


@pytest.mark.usefixtures("fresh_probe")
def test_chosen_gpus_are_the_budget_and_one_gpu_needs_no_worst_line(
    monkeypatch: pytest.MonkeyPatch, small_model: Path
) -> None:
    boards(monkeypatch, *[10 * GiB] * 8)
    subset = check(small_model, Layout(2, 1, 256), ((2, 5), (2, 5)))
    assert subset.budget.free_bytes == 20 * GiB
    assert subset.budget.detail == "free GPU memory (GPU2 Card 2, GPU5 Card 5)"
    assert [g.gpu.index for g in subset.per_gpu] == [2, 5]
    alone = check(small_model, Layout(1, 1, 256), ((5,),))
    assert alone.summary().endswith("10.0G free GPU memory (GPU5 Card 5)")
    assert [line[:4] for line in alone.report()].count("GPU5") == 1


@pytest.mark.usefixtures("fresh_probe")
def test_a_plan_reports_the_layout_that_does_not_fit_over_a_larger_one_that_does(
    monkeypatch: pytest.MonkeyPatch, small_model: Path
) -> None:
    """Spread puts the second of two small instances on GPU1, which has room for half of one;
    the larger single instance fits on GPU0. The plan's verdict is the misfit, not the larger
    total."""
    pair, big = Layout(2, 1, 256), Layout(1, 1, 300_000)
    assert need_of(small_model, big) > 2 * need_of(small_model, pair)
    boards(monkeypatch, need_of(small_model, big), need_of(small_model, pair) // 2)
    verdict = largest(small_model, (big, pair), functools.partial(place, chosen=None, spread=True))
    assert verdict.ask.instances == 2 and not verdict.fits
    assert largest(small_model, (big,), functools.partial(place, chosen=None, spread=True)).fits


@pytest.mark.usefixtures("fresh_probe")
def test_ram_budget_ignores_gpu_placement(
    monkeypatch: pytest.MonkeyPatch, small_model: Path
) -> None:
    boards(monkeypatch, 1)  # one byte free: were the GPU counted, nothing would fit
    verdict = check(small_model, Layout(2, 1, 256, extra_args=("-ngl", "0")), ((0,), (0,)))
    assert verdict.budget.where == "RAM" and verdict.per_gpu == () and verdict.fits


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
