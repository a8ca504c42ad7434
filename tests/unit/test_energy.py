"""Energy per token from NVML's total-energy counters: the probe's readings against pynvml's own
errors, the arithmetic on hand-made readings, and a sweep cell measured on a fake server."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pynvml
import pytest

from tests.fake_gpus import FakeGpu, install, no_nvml
from tests.fake_llama_server import FakeLlamaServer
from tests.helpers import fake_cluster
from tui_lab.engine.plan.config import LabConfig, LoadSettings
from tui_lab.engine.plan.runs import ServerOptions, single
from tui_lab.engine.sweeps.runner import PlanRunner, cell_row
from tui_lab.engine.telemetry import gpu_probe
from tui_lab.engine.telemetry.energy import CellEnergy, cell_energy
from tui_lab.engine.telemetry.gpu_probe import (
    APPLE_ENERGY_REASON,
    NO_GPU_REASON,
    EnergyReading,
    GpuProbe,
)

NOT_SUPPORTED = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


@pytest.fixture(autouse=True)
def not_apple(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_probe, "APPLE_SILICON", False)


def read(indices: tuple[int, ...] | None = None) -> EnergyReading:
    probe = GpuProbe()
    try:
        return probe.energy(indices)
    finally:
        probe.close()


@pytest.mark.parametrize("count", [1, 2, 8])
def test_probe_reads_every_gpus_counter(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    install(monkeypatch, [FakeGpu(energy_mj=1000 * (i + 1)) for i in range(count)])
    reading = read()
    assert reading == EnergyReading({i: 1000 * (i + 1) for i in range(count)}, None)


def test_probe_reads_only_the_gpus_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, [FakeGpu(energy_mj=NOT_SUPPORTED), *(FakeGpu(energy_mj=7),) * 7])
    assert read((3, 6)) == EnergyReading({3: 7, 6: 7}, None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (NOT_SUPPORTED, "GPU1: no energy counter (boards before Volta)"),
        (pynvml.NVMLError_NotSupported(), "GPU1: no energy counter (boards before Volta)"),
        (pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION), "GPU1: NVML: no permission"),
        (pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST), "GPU1: NVML error: GPU is lost"),
    ],
)
def test_one_gpu_without_a_counter_gives_the_others_and_its_reason(
    monkeypatch: pytest.MonkeyPatch, error: pynvml.NVMLError, reason: str
) -> None:
    install(monkeypatch, [FakeGpu(energy_mj=5), FakeGpu(energy_mj=error), FakeGpu(energy_mj=9)])
    reading = read()
    assert reading.millijoules == {0: 5, 2: 9}
    assert reading.reason is not None and reading.reason.startswith(reason)


def test_probe_without_gpus_or_nvml_gives_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, [])
    assert read() == EnergyReading({}, NO_GPU_REASON)
    install(monkeypatch, [FakeGpu()])
    assert read((4,)).reason == "GPU4: NVML error: Invalid Argument"
    no_nvml(monkeypatch)
    assert read() == EnergyReading({}, "no NVIDIA GPU: NVML library not found")
    monkeypatch.setattr(gpu_probe, "APPLE_SILICON", True)
    assert read() == EnergyReading({}, APPLE_ENERGY_REASON)


@pytest.mark.parametrize("count", [1, 2, 8])
def test_energy_is_the_sum_of_the_deltas_and_per_token(count: int) -> None:
    before = EnergyReading({i: 10_000 * i for i in range(count)}, None)
    after = EnergyReading({i: 10_000 * i + 1500 for i in range(count)}, None)
    energy = cell_energy(before, after, output_tokens=300)
    assert energy.energy_j == pytest.approx(1.5 * count)
    assert energy.joules_per_token == pytest.approx(1.5 * count / 300)
    assert energy.energy_reason is None


@pytest.mark.parametrize(
    ("before", "after", "reason"),
    [
        (
            EnergyReading({0: 5}, "GPU1: no energy counter (boards before Volta)"),
            EnergyReading({0: 9}, "GPU1: no energy counter (boards before Volta)"),
            "GPU1: no energy counter (boards before Volta)",
        ),
        (
            EnergyReading({0: 5, 1: 5}, None),
            EnergyReading({0: 9}, "GPU1: NVML error: GPU is lost"),
            "GPU1: NVML error: GPU is lost",
        ),
        (
            EnergyReading({0: 5, 1: 5}, None),
            EnergyReading({0: 9}, None),
            "GPU1: energy not read after the cell",
        ),
        (
            EnergyReading({0: 5, 1: 90_000}, None),
            EnergyReading({0: 9, 1: 20}, None),
            "GPU1: energy counter went back (driver reload)",
        ),
        (EnergyReading({}, None), EnergyReading({}, None), NO_GPU_REASON),
        (
            EnergyReading({}, "no NVIDIA GPU: NVML library not found"),
            EnergyReading({}, "no NVIDIA GPU: NVML library not found"),
            "no NVIDIA GPU: NVML library not found",
        ),
    ],
)
def test_a_counter_missing_anywhere_leaves_no_figure_and_says_why(
    before: EnergyReading, after: EnergyReading, reason: str
) -> None:
    """Never a sum over some of the GPUs, which would make the layout look cheaper."""
    assert cell_energy(before, after, output_tokens=100) == CellEnergy(None, None, reason)


def test_zero_tokens_keep_the_energy_and_say_why_there_is_no_cost_per_token() -> None:
    energy = cell_energy(EnergyReading({0: 0}, None), EnergyReading({0: 4000}, None), 0)
    assert energy == CellEnergy(4.0, None, "no output tokens: no energy per token")


def test_a_failed_cell_has_the_energy_columns_empty() -> None:
    plan = single(LoadSettings(n_predict=4), ServerOptions())
    row = cell_row(plan, 1, plan.cells[0], None, None, "server crashed")
    assert (row["energy_j"], row["joules_per_token"], row["energy_reason"]) == (None, None, None)
    assert list(row)[-4:] == ["energy_j", "joules_per_token", "energy_reason", "error"]


@pytest.mark.usefixtures("fresh_probe")
async def test_a_cell_measures_the_energy_of_its_load_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each GPU's counter moves 2 J per request served, so readings taken right before and
    after the load give exactly 2 J x requests x GPUs, whatever else the cell does."""
    gpus = install(monkeypatch, [FakeGpu(), FakeGpu()])
    load = LoadSettings(n_predict=4, requests=3)
    plan = single(load, ServerOptions())
    lab = LabConfig(server_bin=tmp_path / "none", model=tmp_path / "none.gguf", nginx_bin=None)
    runner = PlanRunner(plan, lab, load, lambda _: None, tmp_path, None)
    in_use: frozenset[int] | None = None  # what the cluster's placement gives: None, every GPU
    async with FakeLlamaServer() as server, aiohttp.ClientSession() as session:

        def counter(handle: int) -> int:
            if isinstance(gpus[handle].energy_mj, pynvml.NVMLError):
                raise gpus[handle].energy_mj
            return 10**9 + 2000 * len(server.bodies)

        async def running_cluster(*_: object) -> object:
            return fake_cluster(server.base_url, lab, in_use)

        monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", counter)
        monkeypatch.setattr(runner, "_cluster_for", running_cluster)
        summary, row = await runner.measure_cell(session, 1, plan.cells[0])
        assert summary is not None and summary.output_tokens == 3 * 4
        assert row["energy_j"] == pytest.approx(2.0 * 3 * 2)
        assert row["joules_per_token"] == pytest.approx(12.0 / 12)
        assert row["energy_reason"] is None
        gpus[1].energy_mj = NOT_SUPPORTED
        in_use = frozenset({0})
        _, on_gpu0 = await runner.measure_cell(session, 2, plan.cells[0])
        in_use = frozenset({1})
        _, on_gpu1 = await runner.measure_cell(session, 3, plan.cells[0])
    runner.load_thread.close()  # what the run's end does; measure_cell alone leaves it running
    assert on_gpu0["energy_j"] == pytest.approx(2.0 * 3)
    assert (on_gpu1["energy_j"], on_gpu1["joules_per_token"]) == (None, None)
    assert on_gpu1["energy_reason"] == "GPU1: no energy counter (boards before Volta)"
