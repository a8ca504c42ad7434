"""NVML replaced at pynvml's function level by boards described in a test, answering with the
structs and error classes pynvml itself uses, so the code under test meets a real driver's
shapes: c_nvmlMemory_t, c_nvmlUtilization_t, NVMLError_NotSupported and the like."""

from __future__ import annotations

from dataclasses import dataclass

import pynvml
import pytest

GiB = 1024**3


@dataclass
class FakeGpu:
    """One board. A field holding an NVMLError is what NVML raises when asked for that figure;
    `energy_mj` is the total-energy counter, which a test may move between two readings."""

    name: str = "NVIDIA H100 80GB HBM3"
    total_bytes: int = 80 * GiB
    used_bytes: int = 0
    utilization: int | pynvml.NVMLError = 0
    energy_mj: int | pynvml.NVMLError = 0
    memory_error: pynvml.NVMLError | None = None


def install(monkeypatch: pytest.MonkeyPatch, gpus: list[FakeGpu]) -> list[FakeGpu]:
    """NVML with these boards (a handle is the board's index: opaque to its callers)."""

    def board(handle: int) -> FakeGpu:
        return gpus[handle]

    def handle_by_index(index: int) -> int:
        if not 0 <= index < len(gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return index

    def memory(handle: int) -> pynvml.c_nvmlMemory_t:
        gpu = board(handle)
        if gpu.memory_error is not None:
            raise gpu.memory_error
        free = gpu.total_bytes - gpu.used_bytes
        return pynvml.c_nvmlMemory_t(total=gpu.total_bytes, free=free, used=gpu.used_bytes)

    def utilization(handle: int) -> pynvml.c_nvmlUtilization_t:
        busy = board(handle).utilization
        if isinstance(busy, pynvml.NVMLError):
            raise busy
        return pynvml.c_nvmlUtilization_t(gpu=busy, memory=0)

    def energy(handle: int) -> int:
        counter = board(handle).energy_mj
        if isinstance(counter, pynvml.NVMLError):
            raise counter
        return counter

    def not_supported(*_: object) -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(gpus))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", handle_by_index)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: board(handle).name)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetUtilizationRates", utilization)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTemperature", not_supported)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", not_supported)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", energy)
    return gpus


def no_nvml(monkeypatch: pytest.MonkeyPatch, error: pynvml.NVMLError | None = None) -> None:
    """As on a box without an NVIDIA driver, whatever the test machine has."""

    def fail() -> None:
        raise error or pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
