"""Fixtures for the unit tests that meet NVML through the process's one shared probe."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tui_lab.engine.machine import preflight
from tui_lab.engine.telemetry import gpu_probe


@pytest.fixture
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shared probe made anew in the test (after its fake NVML is installed) and forgotten
    after it; and not on Apple Silicon, whatever the test machine is."""
    monkeypatch.setattr(gpu_probe, "APPLE_SILICON", False)
    monkeypatch.setattr(preflight, "APPLE_SILICON", False)
    gpu_probe.shared_gpu_probe.cache_clear()
    yield
    gpu_probe.shared_gpu_probe.cache_clear()
