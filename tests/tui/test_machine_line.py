"""The dashboard's machine line with 0, 1 and 8 GPUs: each GPU's utilisation and memory, as
detailed as the width allows, and "-" where NVML gave no utilisation."""

from __future__ import annotations

import pytest
from textual.widgets import Label

from tests.helpers import quiet_app
from tui_lab.engine.events import MachineTelemetry
from tui_lab.engine.telemetry.gpu_probe import GpuSample
from tui_lab.messages import EngineEvents
from tui_lab.screens.dashboard import machine_line

GiB = 1024**3
HEAD = "CPU 12%  RAM 10.0G/64.0G"


def machine(*gpus: tuple[float | None, int, int]) -> MachineTelemetry:
    """One GpuSample per (utilisation, used GiB, total GiB)."""
    return MachineTelemetry(
        time=0.0,
        cpu_percent=12.0,
        memory_used_bytes=10 * GiB,
        memory_total_bytes=64 * GiB,
        swap_used_bytes=0,
        load_1m=None,
        gpus=tuple(
            GpuSample(i, "NVIDIA H200", busy, used * GiB, total * GiB, None, None)
            for i, (busy, used, total) in enumerate(gpus)
        ),
        gpu_reason=None,
        unified_memory=False,
    )


EIGHT = machine(*[(100.0, 123, 140)] * 7, (None, 0, 140))


def test_no_gpu_shows_the_reason() -> None:
    reason = "no NVIDIA GPU: NVML library not found"
    blank = machine()
    assert machine_line(blank, {reason}, 78) == f"{HEAD}  GPU: {reason}"


def test_one_gpu_fits_beside_cpu_and_ram_with_its_total() -> None:
    text = machine_line(machine((35.0, 3, 80)), set(), 78)
    assert text == f"{HEAD}  GPU0 35% 3G/80G"


def test_two_gpus_drop_their_totals_before_taking_a_second_line() -> None:
    two = machine((35.0, 3, 80), (None, 70, 80))
    assert machine_line(two, set(), 78) == f"{HEAD}  GPU0 35% 3G/80G  GPU1 - 70G/80G"
    assert machine_line(two, set(), 50) == f"{HEAD}  GPU0 35% 3G  GPU1 - 70G"


@pytest.mark.parametrize(
    ("width", "gpus"),
    [
        (78, "GPU% 100 100 100 100 100 100 100 -  memory 861G/1.1T"),
        (
            118,
            "GPU 0:100% 123G 1:100% 123G 2:100% 123G 3:100% 123G 4:100% 123G 5:100% 123G "
            "6:100% 123G 7:- 0B",
        ),
    ],
)
def test_eight_gpus_take_a_second_line_that_fits(width: int, gpus: str) -> None:
    text = machine_line(EIGHT, set(), width)
    assert text == f"{HEAD}\n{gpus}"
    assert all(len(line) <= width for line in text.splitlines())


@pytest.mark.parametrize(
    ("count", "lines", "last"),
    [
        (1, 1, f"{HEAD}  GPU0 35% 3G/80G"),
        (8, 2, "GPU " + " ".join(f"{i}:35% 3G" for i in range(8))),
    ],
)
async def test_the_dashboard_at_80_columns_shows_every_gpu(
    count: int, lines: int, last: str
) -> None:
    app = quiet_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        sample = machine(*[(35.0, 3, 80)] * count)
        app.dashboard.post_message(EngineEvents((sample,)))
        await pilot.pause()
        label = app.dashboard.query_one("#machine-line", Label)
        text = str(label.render())
        assert text == machine_line(sample, set(), 78)  # 80 columns less the padding
        assert label.size.height == lines
        assert text.splitlines()[-1] == last
