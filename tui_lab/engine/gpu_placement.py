"""Which GPUs each instance sees (placeholder until the NVML branch lands)."""

from __future__ import annotations

from tui_lab.engine.errors import LabError


def assign_gpus(
    instances: int, chosen: tuple[int, ...] | None, available: int, spread: bool
) -> tuple[tuple[int, ...], ...]:
    gpus = chosen if chosen is not None else tuple(range(available))
    for gpu in gpus:
        if gpu >= available:
            raise LabError(f"--gpus: GPU {gpu} does not exist; NVML sees {available}")
    if not gpus:
        raise LabError("--placement spread: no NVIDIA GPU")
    if spread:
        return tuple((gpus[i % len(gpus)],) for i in range(instances))
    return (gpus,) * instances


def assign_for(
    instances: int, chosen: tuple[int, ...] | None, *, spread: bool
) -> tuple[tuple[int, ...], ...]:
    from tui_lab.engine.preflight import _gpu_probe

    devices, _ = _gpu_probe().devices()
    return assign_gpus(instances, chosen, len(devices), spread)


def cuda_env(gpus: tuple[int, ...]) -> dict[str, str]:
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
