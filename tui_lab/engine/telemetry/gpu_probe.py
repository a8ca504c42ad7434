"""NVML, read without ever raising: the GPUs' figures, each process's GPU memory, energy.

A box without an NVIDIA GPU is normal here (a laptop, Apple Silicon), so every failure becomes a
short reason for the panel's one line instead of an exception; a figure NVML cannot give is
None, never 0.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import pynvml

APPLE_SILICON = sys.platform == "darwin" and platform.machine() == "arm64"
APPLE_REASON = "Apple Silicon: unified memory, counted in RSS and system memory"
NO_GPU_REASON = "no NVIDIA GPU: NVML found none"
CLOSED_REASON = "GPU probe closed"
APPLE_ENERGY_REASON = "Apple Silicon: no NVIDIA GPU, so no NVML energy counter"

# NVML's own messages ("NVML Shared Library Not Found") read like a crash on a box that simply
# has no NVIDIA GPU, and the panel has one short line for the reason.
_NVML_REASONS: dict[type[pynvml.NVMLError], str] = {
    pynvml.NVMLError_LibraryNotFound: "no NVIDIA GPU: NVML library not found",
    pynvml.NVMLError_DriverNotLoaded: "no NVIDIA GPU: driver not loaded",
    pynvml.NVMLError_NoPermission: "NVML: no permission to read the GPU",
    pynvml.NVMLError_NotSupported: "NVML: not supported by this GPU or driver",
}
# pynvml raises NVMLLibraryMismatchError (not an NVMLError) when the driver lacks a versioned call.
_NVML_ERRORS = (pynvml.NVMLError, pynvml.NVMLLibraryMismatchError)


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class EnergyReading:
    """NVML's total-energy counters of some GPUs: millijoules since the driver loaded, by NVML
    index. `reason` says why a GPU asked for is missing from `millijoules` (the first such GPU),
    so a sum over part of the GPUs is never taken for the whole."""

    millijoules: Mapping[int, int]
    reason: str | None


class GpuProbe:
    """NVML, initialised once and never raising to callers: every failure becomes a reason.

    A lock serialises NVML calls with close(), so shutting down while a sampling thread is
    mid-read waits for that read instead of pulling NVML out from under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None  # why NVML cannot be used; None while it is up
        self.unified_memory = APPLE_SILICON  # GPU memory is system memory
        if APPLE_SILICON:
            self._reason = APPLE_REASON
            return
        try:
            pynvml.nvmlInit()
        except _NVML_ERRORS as error:
            self._reason = _nvml_reason(error)

    def devices(self) -> tuple[tuple[GpuSample, ...], str | None]:
        with self._lock:
            if self._reason is not None:
                return (), self._reason
            try:
                handles = _handles()
            except _NVML_ERRORS as error:
                return (), _nvml_reason(error)
            samples: list[GpuSample] = []
            failure: str | None = None
            for index, handle in enumerate(handles):
                try:
                    samples.append(_device_sample(index, handle))
                except _NVML_ERRORS as error:
                    failure = failure or _nvml_reason(error)
            if samples:
                return tuple(samples), None
            return (), failure or NO_GPU_REASON

    def process_memory(self) -> tuple[dict[int, int], str | None]:
        """PID -> bytes of GPU memory over all devices; a reason only when nothing was readable,
        so one device refusing per-process figures does not hide the others'."""
        with self._lock:
            if self._reason is not None:
                return {}, self._reason
            try:
                handles = _handles()
            except _NVML_ERRORS as error:
                return {}, _nvml_reason(error)
            if not handles:
                return {}, NO_GPU_REASON
            totals: dict[int, int] = {}
            failure: str | None = None
            read_any = False
            for handle in handles:
                device: dict[int, int] = {}
                for listing in (
                    pynvml.nvmlDeviceGetComputeRunningProcesses,
                    pynvml.nvmlDeviceGetGraphicsRunningProcesses,
                ):
                    try:
                        used = _listed_memory(listing(handle))
                    except _NVML_ERRORS as error:
                        failure = failure or _nvml_reason(error)
                        continue
                    read_any = True
                    # A process doing compute and graphics is in both lists with the same
                    # figure (nvidia-smi shows it once, as "C+G"): count it once.
                    for pid, size in used.items():
                        device[pid] = max(device.get(pid, 0), size)
                for pid, size in device.items():
                    totals[pid] = totals.get(pid, 0) + size
            return totals, None if read_any else failure

    def energy(self, indices: Collection[int] | None = None) -> EnergyReading:
        """The total-energy counter of each GPU in `indices` (None: every GPU NVML sees).

        The counter is the board's, not a process's: whatever else runs on the GPU counts too.
        Boards before Volta have none (NVML answers NotSupported)."""
        with self._lock:
            if self._reason is not None:
                reason = APPLE_ENERGY_REASON if self._reason == APPLE_REASON else self._reason
                return EnergyReading({}, reason)
            try:
                wanted = range(pynvml.nvmlDeviceGetCount()) if indices is None else indices
            except _NVML_ERRORS as error:
                return EnergyReading({}, _nvml_reason(error))
            if not wanted:
                return EnergyReading({}, NO_GPU_REASON)
            millijoules: dict[int, int] = {}
            failure: str | None = None
            for index in wanted:
                try:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                    millijoules[index] = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
                except pynvml.NVMLError_NotSupported:
                    failure = failure or f"GPU{index}: no energy counter (boards before Volta)"
                except _NVML_ERRORS as error:
                    failure = failure or f"GPU{index}: {_nvml_reason(error)}"
            return EnergyReading(millijoules, failure)

    def close(self) -> None:
        with self._lock:
            if self._reason is None:
                with contextlib.suppress(*_NVML_ERRORS):
                    pynvml.nvmlShutdown()
                self._reason = CLOSED_REASON


# One probe for the whole process, initialised on first use and never closed: the configure screen
# sizes a layout on every keystroke, placement asks which GPUs exist and the sweep reads energy
# around every cell, and NVML counts its initialisations, so a collector closing its own probe
# does not end this one.
shared_gpu_probe = functools.cache(GpuProbe)


def _nvml_reason(error: Exception) -> str:
    return _NVML_REASONS.get(type(error), f"NVML error: {error}")


def _handles() -> list[object]:
    return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]


def _device_sample(index: int, handle: object) -> GpuSample:
    """Name and memory are required; the rest is missing on some boards and drivers."""
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return GpuSample(
        index=index,
        name=pynvml.nvmlDeviceGetName(handle),
        utilization_percent=_optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        temperature_c=_optional(
            lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        ),
        power_w=_optional(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),  # from mW
    )


def _optional(read: Callable[[], float]) -> float | None:
    try:
        return float(read())
    except _NVML_ERRORS:
        return None


def _listed_memory(processes: Iterable[object]) -> dict[int, int]:
    used: dict[int, int] = {}
    for proc in processes:
        size = proc.usedGpuMemory  # type: ignore[attr-defined]
        if size is not None:  # None: NVML cannot tell (Windows WDDM), so it adds nothing
            used[proc.pid] = used.get(proc.pid, 0) + int(size)  # type: ignore[attr-defined]
    return used


def gpu_memory_for(pids: Iterable[int], per_pid: Mapping[int, int]) -> int | None:
    """GPU memory of a process and its children (nginx's workers, a server's helpers); None
    when none of them holds any, so "not on the GPU" is never shown as 0 bytes."""
    sizes = [per_pid[pid] for pid in pids if pid in per_pid]
    return sum(sizes) if sizes else None
