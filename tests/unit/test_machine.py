from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from tui_lab.engine.machine import facts as machine
from tui_lab.engine.machine.facts import machine_facts
from tui_lab.engine.processes.placement import parse_cpu_list


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-llama-server"
    path.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_real_machine_without_gpu(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 96)
    facts = machine_facts(None, model)
    assert facts["hostname"]
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(facts["cpu_logical"], int) and facts["cpu_logical"] >= 1
    # What --threads auto and --placement pinned divide, as this process may use it.
    usable = parse_cpu_list(str(facts["cpus_usable"]))
    assert set(usable) == os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else usable
    assert 1 <= int(facts["physical_cores_usable"]) <= len(usable)  # type: ignore[call-overload]
    assert isinstance(facts["ram_total_bytes"], int) and facts["ram_total_bytes"] > 0
    assert str(facts["recorded_at"]).endswith("+00:00")
    assert (facts["model_path"], facts["model_name"], facts["model_size_bytes"]) == (
        str(model),
        "tiny.gguf",
        100,
    )
    assert facts["server_version"] is None and facts["server_version_reason"]
    if not Path("/dev/nvidiactl").exists():
        assert facts["gpus"] == []
        assert facts["gpu_reason"]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVMLError_LibraryNotFound, "NVML library not found"),
        (pynvml.NVMLError_DriverNotLoaded, "NVIDIA driver not loaded"),
        (pynvml.NVMLError_NoPermission, "NVML error:"),
    ],
)
def test_nvml_init_errors_give_a_reason(
    monkeypatch: pytest.MonkeyPatch, error: type[pynvml.NVMLError], reason: str
) -> None:
    def fail() -> None:
        raise error()

    monkeypatch.setattr(pynvml, "nvmlInit", fail)
    facts = machine_facts(None, None)
    assert facts["gpus"] == []
    assert facts["gpu_driver"] is None
    assert str(facts["gpu_reason"]).startswith(reason)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two fake GPUs; the returned list records init/shutdown calls."""
    calls: list[str] = []
    devices = {
        "h0": ("NVIDIA GeForce RTX 4090", 24 * 2**30),
        "h1": ("NVIDIA A100-SXM4-80GB", 80 * 2**30),
    }
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: calls.append("init"))
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(devices))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: f"h{index}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: devices[handle][0])
    monkeypatch.setattr(
        pynvml,
        "nvmlDeviceGetMemoryInfo",
        lambda handle: SimpleNamespace(total=devices[handle][1], free=0, used=0),
    )
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54.14")
    return calls


def test_nvml_gpus_reported(fake_nvml: list[str]) -> None:
    facts = machine_facts(None, None)
    assert facts["gpus"] == [
        {"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_bytes": 24 * 2**30},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "memory_total_bytes": 80 * 2**30},
    ]
    assert facts["gpu_driver"] == "550.54.14"
    assert facts["gpu_reason"] is None
    assert fake_nvml == ["init", "shutdown"]


def test_nvml_error_after_init_still_shuts_down(
    fake_nvml: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(handle: str) -> str:
        raise pynvml.NVMLError_GpuIsLost()

    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lost)
    facts = machine_facts(None, None)
    assert facts["gpus"] == []
    assert "NVML error" in str(facts["gpu_reason"])
    assert fake_nvml == ["init", "shutdown"]


def test_nvml_without_devices(fake_nvml: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 0)
    facts = machine_facts(None, None)
    assert facts["gpus"] == []
    assert facts["gpu_reason"]


def test_server_version_from_stderr(tmp_path: Path) -> None:
    server = _script(
        tmp_path,
        'print("version: 1234 (deadbeef)", file=sys.stderr)\n'
        'print("built with cc for x86_64-linux-gnu", file=sys.stderr)',
    )
    facts = machine_facts(server, None)
    assert facts["server_bin"] == str(server)
    assert facts["server_version"] == "version: 1234 (deadbeef)"
    assert facts["server_version_reason"] is None


def test_server_without_version_line(tmp_path: Path) -> None:
    server = _script(tmp_path, 'print("error: unknown option", file=sys.stderr)\nsys.exit(1)')
    facts = machine_facts(server, None)
    assert facts["server_version"] is None
    assert "exit code 1" in str(facts["server_version_reason"])


def test_missing_server_binary(tmp_path: Path) -> None:
    facts = machine_facts(tmp_path / "no-such-llama-server", None)
    assert facts["server_version"] is None
    assert str(facts["server_version_reason"]).startswith("could not run it")


def test_non_executable_server(tmp_path: Path) -> None:
    server = tmp_path / "llama-server"
    server.write_text("not a program")
    facts = machine_facts(server, None)
    assert facts["server_version"] is None
    assert facts["server_version_reason"]


def test_hanging_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "VERSION_TIMEOUT_S", 0.5)
    server = _script(tmp_path, "import time\ntime.sleep(30)")
    facts = machine_facts(server, None)
    assert facts["server_version"] is None
    assert "did not finish" in str(facts["server_version_reason"])
