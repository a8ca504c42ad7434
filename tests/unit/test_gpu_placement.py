"""Which GPU each instance sees, for 1, 2 and 8 GPUs, with NVML faked at pynvml's own level."""

from __future__ import annotations

import pynvml
import pytest

from tests.fake_gpus import FakeGpu, install, no_nvml
from tui_lab.engine.errors import LabError
from tui_lab.engine.processes.gpu_placement import (
    InstanceGpus,
    assign_gpus,
    cuda_env,
    place,
    visible_gpus,
)


@pytest.mark.parametrize(
    ("instances", "chosen", "available", "spread", "expected"),
    [
        (1, None, 1, False, ((0,),)),
        (3, None, 1, True, ((0,), (0,), (0,))),
        (3, None, 2, False, ((0, 1),) * 3),
        (3, None, 2, True, ((0,), (1,), (0,))),  # wraps round
        (8, None, 8, True, tuple((i,) for i in range(8))),
        (10, None, 8, True, (*((i,) for i in range(8)), (0,), (1,))),
        (2, None, 8, True, ((0,), (1,))),  # fewer instances than GPUs: the first ones
        (4, (5, 2), 8, True, ((5,), (2,), (5,), (2,))),  # the order given, not sorted
        (2, (3, 1), 8, False, ((3, 1), (3, 1))),
        (2, (1,), 2, False, ((1,), (1,))),
        (2, None, 0, False, ((), ())),  # nothing to choose: the servers keep their environment
    ],
)
def test_each_instance_gets_its_gpus(
    instances: int,
    chosen: tuple[int, ...] | None,
    available: int,
    spread: bool,
    expected: InstanceGpus,
) -> None:
    assert assign_gpus(instances, chosen, available, spread) == expected


@pytest.mark.parametrize(
    ("chosen", "available", "spread", "message"),
    [
        ((3,), 2, False, "--gpus: GPU 3 does not exist; NVML sees 2 (0-1)"),
        ((0, 1), 1, True, "--gpus: GPU 1 does not exist; NVML sees 1 (0)"),
        ((7, 8), 8, True, "--gpus: GPU 8 does not exist; NVML sees 8 (0-7)"),
        ((-1,), 8, False, "--gpus: GPU -1 does not exist; NVML sees 8 (0-7)"),
        ((2, 0, 2), 8, True, "--gpus: GPU 2 is given twice"),
        ((), 2, False, "--gpus: no GPU given (all, or indices such as 0,1)"),
        ((0,), 0, False, "--gpus: GPU 0 does not exist; NVML sees none (no NVIDIA GPU: NVML "),
        (None, 0, True, "--placement spread: no NVIDIA GPU: NVML found none"),
    ],
)
def test_impossible_asks_are_one_line_naming_the_setting(
    chosen: tuple[int, ...] | None, available: int, spread: bool, message: str
) -> None:
    with pytest.raises(LabError) as caught:
        assign_gpus(2, chosen, available, spread)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_cuda_env_pins_pci_order_so_indices_are_nvidia_smis() -> None:
    assert cuda_env((1, 3)) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1,3"}
    assert cuda_env((7,)) == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "7"}
    assert cuda_env(()) == {}


@pytest.mark.usefixtures("fresh_probe")
def test_place_spreads_over_what_nvml_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, [FakeGpu(f"Card {i}") for i in range(8)])
    assert place(9, None, spread=True)[8] == (0,)
    assert place(2, (6, 7), spread=False) == ((6, 7), (6, 7))
    with pytest.raises(LabError, match=r"^--gpus: GPU 8 does not exist; NVML sees 8 \(0-7\)$"):
        place(1, (8,), spread=False)


@pytest.mark.usefixtures("fresh_probe")
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (pynvml.NVMLError_LibraryNotFound(), "no NVIDIA GPU: NVML library not found"),
        (pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED), "no NVIDIA GPU: driver not loaded"),
    ],
)
def test_without_nvml_spread_says_why_and_shared_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, error: pynvml.NVMLError, reason: str
) -> None:
    no_nvml(monkeypatch, error)
    assert visible_gpus() == ((), reason)
    assert place(2, None, spread=False) == ((), ())
    with pytest.raises(LabError, match=f"^--placement spread: {reason}$"):
        place(2, None, spread=True)


@pytest.mark.usefixtures("fresh_probe")
def test_a_gpu_nvml_cannot_read_ends_the_gpus_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offering GPU 0 and 2 as "two GPUs" would make index 1 name the third card."""
    lost = pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
    install(monkeypatch, [FakeGpu("A"), FakeGpu("B", memory_error=lost), FakeGpu("C")])
    gpus, reason = visible_gpus()
    assert [(g.index, g.name) for g in gpus] == [(0, "A")] and reason is None
    assert place(3, None, spread=True) == ((0,), (0,), (0,))
