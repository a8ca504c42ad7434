"""Fixtures of the TUI tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own presets and last settings: never the tester's."""
    folder = tmp_path / "config"
    monkeypatch.setenv("LLAMALAB_CONFIG", str(folder))
    return folder
