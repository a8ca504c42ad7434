"""Defects a person saw in the real app (issue 11), each pinned by a test that failed before."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from tui_lab.app import LabApp
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.screens.configure import ConfigureScreen


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("LLAMALAB_CONFIG", str(home))
    return home


async def test_print_with_flush_inside_the_app_does_not_break_textuals_own_flush() -> None:
    """Our event flush was named `_flush`, overriding Textual's `App._flush(stderr=...)`,
    which a print(..., flush=True) from any library reaches."""
    async with LabApp(RunSettings(model="")).run_test() as pilot:
        print("a library's progress line", flush=True)
        await pilot.pause()
        assert pilot.app.is_running


async def test_the_forms_instances_field_is_one_line_in_the_real_app() -> None:
    """The dashboard's `#instances { height: 9 }` once matched the form's field of that id."""
    async with LabApp(RunSettings(model="")).run_test(size=(80, 24)) as pilot:
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfigureScreen)
        assert pilot.app.screen.query_one("#instances", Input).size.height == 1


async def test_the_dashboard_footer_shows_help_and_quit_at_80x24() -> None:
    """Over SSH on a laptop the footer is the only hint: it was cut after `v Resu…`."""
    async with LabApp(RunSettings(model="")).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        bottom = pilot.app.screen._compositor.render_strips()[-1]
        footer = "".join(segment.text for segment in bottom)
        assert "? Help" in footer and "q Quit" in footer, footer
        assert pilot.app.screen.query_one("#log").size.width >= 24  # a log line is readable
