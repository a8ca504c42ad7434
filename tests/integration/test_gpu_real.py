"""The NVML path against a real NVIDIA driver, wherever one works.

No GPU machine is lent to this project, so on its own boxes this is skipped; the NVML failure
paths and the matching of GPU processes to our PIDs are covered against NVML's own error types
and structures in tests/unit/test_telemetry.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tui_lab.engine.telemetry.gpu_probe import GpuProbe

pytestmark = pytest.mark.integration


def _nvidia_smi(*args: str) -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip().splitlines() if out.returncode == 0 else None


GPUS = _nvidia_smi("--query-gpu=name,memory.total", "--format=csv,noheader,nounits")


@pytest.mark.skipif(not GPUS, reason="no working NVIDIA driver here (nvidia-smi absent or failing)")
def test_devices_match_what_nvidia_smi_reports() -> None:
    assert GPUS is not None
    probe = GpuProbe()
    try:
        devices, reason = probe.devices()
        per_pid, _ = probe.process_memory()
    finally:
        probe.close()
    assert reason is None
    assert len(devices) == len(GPUS)
    for device, line in zip(devices, GPUS, strict=True):
        name, total_mib = (part.strip() for part in line.rsplit(",", 1))
        assert device.name == name
        assert abs(device.memory_total_bytes / 2**20 - float(total_mib)) <= 1
        assert 0 <= device.memory_used_bytes <= device.memory_total_bytes
    assert all(size >= 0 for size in per_pid.values())


@pytest.mark.skipif(not GPUS, reason="no working NVIDIA driver here (nvidia-smi absent or failing)")
def test_energy_counters_cover_every_gpu_and_only_go_up() -> None:
    """Boards before Volta have no counter: then the reason must say so, not a figure."""
    assert GPUS is not None
    probe = GpuProbe()
    try:
        first = probe.energy()
        time.sleep(0.5)
        second = probe.energy()
    finally:
        probe.close()
    if first.reason is not None:
        assert "no energy counter" in first.reason
        return
    assert sorted(first.millijoules) == list(range(len(GPUS)))
    assert all(second.millijoules[i] >= first.millijoules[i] for i in first.millijoules)
