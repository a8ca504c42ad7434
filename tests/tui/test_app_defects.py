"""Defects a person saw in the real app (issue 11), each pinned by a test that failed before."""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Input

from tui_lab.app import LabApp
from tui_lab.engine.events import ProcessState
from tui_lab.engine.settings.run_settings import RunSettings
from tui_lab.messages import EngineEvents
from tui_lab.screens.configure import ConfigureScreen
from tui_lab.widgets.log_pane import LogPane
from tui_lab.widgets.throughput_plot import ThroughputPlot


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


SERVER_LINE = "slot launch_slot_: id  0 | task 7 | processing task, is_child = 0"


async def show_a_servers_log(pilot: Pilot[None], tmp_path: Path) -> LogPane:
    """A ready server whose log has lines, selected, and `l` pressed."""
    log = tmp_path / "server-0.log"
    log.write_text(f"{SERVER_LINE}\n" * 20)
    assert isinstance(pilot.app, LabApp)
    ready = ProcessState("server", 0, 8100, 4242, "ready", log_path=log)
    pilot.app.dashboard.post_message(EngineEvents((ready,)))
    await pilot.pause()
    await pilot.press("l")
    await pilot.pause()
    pane = pilot.app.dashboard.query_one(LogPane)
    assert pane.line_count == 20
    return pane


async def test_a_servers_log_line_is_readable_at_80x24(tmp_path: Path) -> None:
    """Beside the plot the log cut every line at 29 columns (`slot launch_slot_: id  0 | ta`):
    at 80 columns the log takes the plot's place on `l`, and `l` again brings the plot back."""
    async with LabApp(RunSettings(model=""), telemetry_interval_s=3600).run_test(
        size=(80, 24)
    ) as pilot:
        pane = await show_a_servers_log(pilot, tmp_path)
        assert pane.scrollable_content_region.width >= len(SERVER_LINE)
        plot = pilot.app.screen.query_one(ThroughputPlot)
        assert not plot.display
        await pilot.press("l")
        await pilot.pause()
        assert plot.display and plot.size.width == 80 and not pane.display


async def test_the_log_stays_beside_the_plot_at_120x40(tmp_path: Path) -> None:
    async with LabApp(RunSettings(model=""), telemetry_interval_s=3600).run_test(
        size=(120, 40)
    ) as pilot:
        pane = await show_a_servers_log(pilot, tmp_path)
        plot = pilot.app.screen.query_one(ThroughputPlot)
        assert (plot.region.width, pane.region.width) == (72, 48)
        await pilot.press("l")  # follows the log again: nothing to take turns with
        await pilot.pause()
        assert plot.display and pane.display and pane.line_count == 20
