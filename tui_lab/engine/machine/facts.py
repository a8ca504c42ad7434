"""Facts about the box, stored beside every sweep.

A throughput figure means nothing without the machine and build that produced it, so these are
recorded as measured: when a fact cannot be read (no NVIDIA driver, a server that will not start)
the value is None or empty and a `*_reason` key says why, rather than a guess.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pynvml

from tui_lab.engine.processes.placement import format_cpu_list, machine_topology

VERSION_TIMEOUT_S = 10.0
SYSCTL_TIMEOUT_S = 5.0

# NVML's own messages ("NVML Shared Library Not Found") read like a crash on a box that simply
# has no NVIDIA GPU; the two everyday cases get a plainer sentence.
_NVML_REASONS: dict[type[pynvml.NVMLError], str] = {
    pynvml.NVMLError_LibraryNotFound: "NVML library not found (no NVIDIA driver installed)",
    pynvml.NVMLError_DriverNotLoaded: "NVIDIA driver not loaded",
}


def machine_facts(server_bin: Path | None, model: Path | None) -> dict[str, object]:
    """Everything needed to compare this sweep with one from another box or build.

    Synchronous and slow-ish (it runs `llama-server --version`): call it once per sweep, from a
    thread when on an event loop.
    """
    memory = psutil.virtual_memory()
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "os": platform.system(),
        "os_release": platform.release(),
        "platform": platform.platform(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        **_placement_facts(),
        "ram_total_bytes": memory.total,
        **_gpu_facts(),
        **_server_version(server_bin),
        **_model_facts(model),
    }


def _placement_facts() -> dict[str, object]:
    """The cores `--threads auto` and `--placement pinned` divided: a cell's thread counts and
    CPU lists only mean something beside them (a container may see fewer than the box has)."""
    topology = machine_topology()
    return {
        "cpus_usable": format_cpu_list(topology.cpus),
        "physical_cores_usable": len(topology.cores),
        "numa_nodes": len(topology.nodes),
    }


def _cpu_model() -> str | None:
    """The marketing name, because core counts alone do not tell an EPYC from an Atom."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
                for line in cpuinfo:
                    key, _, value = line.partition(":")
                    if key.strip() == "model name" and value.strip():
                        return value.strip()
        except OSError:
            pass
    elif sys.platform == "darwin":
        try:
            done = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=SYSCTL_TIMEOUT_S,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    # ARM Linux has no "model name" line; platform.processor() is the best remaining hint.
    return platform.processor() or None


def _gpu_facts() -> dict[str, object]:
    """NVIDIA GPUs as NVML reports them, or none plus the reason NVML gave."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return {"gpus": [], "gpu_driver": None, "gpu_reason": _nvml_reason(error)}
    try:
        gpus: list[dict[str, object]] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                {
                    "index": index,
                    "name": pynvml.nvmlDeviceGetName(handle),
                    "memory_total_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                }
            )
        driver = pynvml.nvmlSystemGetDriverVersion()
    except pynvml.NVMLError as error:
        return {"gpus": [], "gpu_driver": None, "gpu_reason": _nvml_reason(error)}
    finally:
        pynvml.nvmlShutdown()
    reason = None if gpus else "NVML found no NVIDIA GPU"
    return {"gpus": gpus, "gpu_driver": driver, "gpu_reason": reason}


def _nvml_reason(error: pynvml.NVMLError) -> str:
    return _NVML_REASONS.get(type(error), f"NVML error: {error}")


def _server_version(server_bin: Path | None) -> dict[str, object]:
    """The build's own `version: N (commit)` line: the same model is a different benchmark on
    another llama.cpp commit."""
    if server_bin is None:
        return {
            "server_bin": None,
            "server_version": None,
            "server_version_reason": "no llama-server given",
        }
    try:
        done = subprocess.run(
            [str(server_bin), "--version"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return _no_version(server_bin, f"--version did not finish in {VERSION_TIMEOUT_S:g} s")
    except OSError as error:
        return _no_version(server_bin, f"could not run it: {error.strerror or error}")
    # llama-server prints the version on stderr; stdout is read too in case a build changes that.
    lines = [
        line.strip()
        for line in (done.stderr + "\n" + done.stdout).splitlines()
        if line.strip().startswith("version")
    ]
    if not lines:
        return _no_version(
            server_bin, f"no 'version' line in --version output (exit code {done.returncode})"
        )
    return {
        "server_bin": str(server_bin),
        "server_version": "\n".join(lines),
        "server_version_reason": None,
    }


def _no_version(server_bin: Path, reason: str) -> dict[str, object]:
    return {"server_bin": str(server_bin), "server_version": None, "server_version_reason": reason}


def _model_facts(model: Path | None) -> dict[str, object]:
    """Path and size identify the exact quantisation file, which the name alone may not."""
    if model is None:
        return {"model_path": None, "model_name": None, "model_size_bytes": None}
    try:
        size: int | None = model.stat().st_size
    except OSError:
        size = None
    return {"model_path": str(model), "model_name": model.name, "model_size_bytes": size}
