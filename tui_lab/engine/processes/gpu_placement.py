"""Which NVIDIA GPUs each llama-server of a layout sees, and the environment that makes it so.

`--gpus` chooses the GPUs (NVML's indices, as nvidia-smi numbers them) and `--placement` whether
every instance sees all of them (shared: llama.cpp splits each instance's layers over them) or
each instance gets one of its own in turn (spread). Everything here is decided before a server
starts, so an impossible ask is one line naming the setting, never a CUDA error in a server log.
"""

from __future__ import annotations

from tui_lab.engine.errors import LabError
from tui_lab.engine.telemetry.gpu_probe import NO_GPU_REASON, GpuSample, shared_gpu_probe

InstanceGpus = tuple[tuple[int, ...], ...]  # per instance, the NVML indices of the GPUs it sees


def assign_gpus(
    instances: int,
    chosen: tuple[int, ...] | None,
    available: int,
    spread: bool,
    *,
    no_gpu_reason: str = NO_GPU_REASON,
) -> InstanceGpus:
    """Per instance, the GPUs it sees, out of the `available` GPUs NVML reports (0 to available-1).

    `chosen` None means every one of them. Shared: every instance sees all chosen GPUs; spread:
    instance i gets chosen[i mod G], so instances beyond the G GPUs share them round-robin.
    With no GPU at all and nothing asked of one, every instance gets (): there is nothing to
    choose, and the servers keep the environment they inherit. `no_gpu_reason` is why NVML sees
    none, for the error line.
    """
    if chosen is not None:
        _check_chosen(chosen, available, no_gpu_reason)
    gpus = tuple(range(available)) if chosen is None else chosen
    if spread and not gpus:
        raise LabError(f"--placement spread: {no_gpu_reason}")
    if spread:
        return tuple((gpus[i % len(gpus)],) for i in range(instances))
    return (gpus,) * instances


def _check_chosen(chosen: tuple[int, ...], available: int, no_gpu_reason: str) -> None:
    if not chosen:
        raise LabError("--gpus: no GPU given (all, or indices such as 0,1)")
    sees = f"{available} ({_span(available)})" if available else f"none ({no_gpu_reason})"
    for position, index in enumerate(chosen):
        if not 0 <= index < available:
            raise LabError(f"--gpus: GPU {index} does not exist; NVML sees {sees}")
        if index in chosen[:position]:
            raise LabError(f"--gpus: GPU {index} is given twice")


def _span(count: int) -> str:
    return "0" if count == 1 else f"0-{count - 1}"


def cuda_env(gpus: tuple[int, ...]) -> dict[str, str]:
    """What to add to a llama-server's environment so that it sees exactly `gpus`.

    CUDA_VISIBLE_DEVICES rather than llama-server's `--device`: the variable works with every
    CUDA build, old ones included, and the other GPUs do not exist for the process at all (no
    CUDA context, no memory reserved on them), whereas `--device` takes the backend's own names
    (CUDA0, ...) and still lets the process open every GPU. CUDA numbers its devices fastest
    first by default, not in NVML's and nvidia-smi's PCI order, so without CUDA_DEVICE_ORDER
    "GPU 1" could be another card. The pair replaces any CUDA_VISIBLE_DEVICES the lab inherited:
    NVML ignores that variable, so the indices here are always NVML's. A Vulkan build ignores
    both. () means there was nothing to choose (no GPU NVML sees): nothing is added.
    """
    if not gpus:
        return {}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}


def visible_gpus() -> tuple[tuple[GpuSample, ...], str | None]:
    """The GPUs placement can use, from the process's one NVML probe, or none and why.

    Blocking (NVML's first initialisation): call it from a thread on an event loop. A device
    NVML lists but cannot read ends the list, so the GPUs offered are always 0 to N-1 and an
    index never names another card than nvidia-smi shows.
    """
    gpus, reason = shared_gpu_probe().devices()
    usable = next((i for i, gpu in enumerate(gpus) if gpu.index != i), len(gpus))
    return gpus[:usable], reason


def place(instances: int, chosen: tuple[int, ...] | None, spread: bool) -> InstanceGpus:
    """`assign_gpus` over the GPUs NVML sees now (blocking, as `visible_gpus`)."""
    gpus, reason = visible_gpus()
    return assign_gpus(instances, chosen, len(gpus), spread, no_gpu_reason=reason or NO_GPU_REASON)
