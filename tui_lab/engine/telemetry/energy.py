"""Energy per generated token: NVML's total-energy counters read either side of a cell's
measured phase, on the GPUs the cell's instances use.

The counters are the boards' own (millijoules since the driver loaded), so the figure is what the
GPUs drew while the cell ran, idle draw and any other process on them included: a cost per
token of the whole card, comparable between layouts on the same box. Where a counter cannot be
read the figures are None with the reason, never a zero that would read as free tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass

from tui_lab.engine.telemetry.gpu_probe import NO_GPU_REASON, EnergyReading, shared_gpu_probe


@dataclass(frozen=True)
class CellEnergy:
    """A cell's energy columns; the field names are the results' column names."""

    energy_j: float | None = None  # over the measured phase, all the cell's GPUs together
    joules_per_token: float | None = None  # energy_j / the output tokens of the cell
    energy_reason: str | None = None  # why either is None; None on a failed cell, which has none


async def read_energy(gpus: Collection[int] | None) -> EnergyReading:
    """The counters of `gpus` (None: every GPU NVML sees), read in a thread (NVML blocks)."""
    return await asyncio.to_thread(lambda: shared_gpu_probe().energy(gpus))


def cell_energy(before: EnergyReading, after: EnergyReading, output_tokens: int) -> CellEnergy:
    """The sum of every GPU's counter delta, and that per output token.

    A GPU missing from either reading, or whose counter went backwards (the driver reloaded in
    between), leaves the energy unknown: a sum over some of the GPUs would look like a cheaper
    layout. Zero tokens leave the energy known and the cost per token undefined.
    """
    reason = before.reason or after.reason
    if reason is None and not before.millijoules:
        reason = NO_GPU_REASON
    if reason is not None:
        return CellEnergy(energy_reason=reason)
    millijoules = 0
    for index, start in sorted(before.millijoules.items()):
        end = after.millijoules.get(index)
        if end is None:
            return CellEnergy(energy_reason=f"GPU{index}: energy not read after the cell")
        if end < start:
            return CellEnergy(energy_reason=f"GPU{index}: energy counter went back (driver reload)")
        millijoules += end - start
    energy_j = millijoules / 1000
    if output_tokens <= 0:
        return CellEnergy(energy_j, None, "no output tokens: no energy per token")
    return CellEnergy(energy_j, energy_j / output_tokens, None)
