"""The dashboard's widgets fed hand-made engine events: what a person sees for each."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from textual.app import App, ComposeResult

from tests.helpers import machine_sample, sample
from tui_lab.engine.events import CellStarted, ProcessState
from tui_lab.widgets.instance_table import InstanceTable, human_bytes
from tui_lab.widgets.log_pane import LogPane
from tui_lab.widgets.throughput_plot import ThroughputPlot


def started_earlier(table: InstanceTable, key: str, seconds: float) -> None:
    """As if the engine had started the row's process `seconds` ago."""
    info = table.rows_info[key]
    info.state = replace(info.state, started=time.time() - seconds)


class Harness(App[None]):
    def compose(self) -> ComposeResult:
        yield InstanceTable()
        yield ThroughputPlot()
        yield LogPane()


def rendered(table: InstanceTable, y: int) -> str:
    """The text of one line of the table as it is drawn now (0 is the header)."""
    return table.render_line(y).text


def cell(table: InstanceTable, key: str, column: str) -> str:
    return table.cell(key, column)


async def test_instance_rows_follow_state_and_telemetry_by_pid() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 0, 8100, 42, "starting"))
        table.apply_state(ProcessState("nginx", 0, 8000, 50, "ready"))
        assert table.row_count == 2 and cell(table, "run-server-0", "state") == "starting"
        table.apply_state(ProcessState("server", 0, 8100, 42, "ready"))
        table.apply_telemetry(sample(0, 42))
        assert cell(table, "run-server-0", "state") == "busy"
        assert cell(table, "run-server-0", "slots") == "2/4"
        assert cell(table, "run-server-0", "reqs") == "57"
        assert cell(table, "run-server-0", "tps") == "87.5"
        assert cell(table, "run-server-0", "rss") == "300.0M"
        assert cell(table, "run-server-0", "gpu") == "-"  # no GPU figure: not a made-up zero
        assert table.gpu_reasons() == {"no NVIDIA GPU: NVML library not found"}
        table.apply_telemetry(sample(0, 999, tokens_per_s=1.0))  # a stale process's sample
        assert cell(table, "run-server-0", "tps") == "87.5"


async def test_kv_cache_use_and_deferred_requests_show_past_the_uptime() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 0, 8100, 42, "ready"))
        table.apply_telemetry(sample(0, 42, requests_deferred=3))
        # This build exports no KV-cache gauge: unknown, not 0%.
        assert (cell(table, "run-server-0", "kv"), cell(table, "run-server-0", "deferred")) == (
            "-",
            "3",
        )
        table.apply_telemetry(sample(0, 42, kv_cache_usage=0.375))
        assert cell(table, "run-server-0", "kv") == "38%"


async def test_columns_widen_for_wider_figures_and_keep_their_width() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 0, 8100, 42, "ready"))
        table.apply_telemetry(sample(0, 42, rss_bytes=3 * 1024**3 + 1))
        await pilot.pause()
        assert table.column_width("rss") == len("3.0G")
        table.apply_telemetry(sample(0, 42, rss_bytes=10 * 1024**3))
        await pilot.pause()
        assert table.column_width("rss") == len("10.0G")  # grew, nothing truncated
        assert "10.0G" in rendered(table, 1)
        table.apply_telemetry(sample(0, 42, rss_bytes=500))
        await pilot.pause()
        # A narrower figure does not re-measure the column: no jitter, no per-tick cost.
        assert table.column_width("rss") == len("10.0G")


async def test_a_repeated_sample_changes_no_row_and_uptime_rides_on_the_samples() -> None:
    """A sample that changes nothing marks no row for rendering, and the uptime clock leaves
    the rows telemetry already updated."""
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 0, 8100, 42, "ready", started=time.time()))
        table.apply_state(ProcessState("nginx", 0, 8000, 50, "ready", started=time.time()))
        updated: list[str] = []
        real_changed = table._row_changed

        def spy(key: str) -> None:
            updated.append(key)
            real_changed(key)

        table._row_changed = spy  # type: ignore[method-assign]
        table.apply_telemetry(sample(0, 42))
        assert updated == ["run-server-0"]  # one row, once, however many of its cells changed
        table.apply_telemetry(sample(0, 42))
        assert updated == ["run-server-0"]
        started_earlier(table, "run-nginx-0", 75)
        table._tick_uptime()
        assert updated[1:] == ["run-nginx-0"]  # the sampled server is left alone
        assert cell(table, "run-nginx-0", "up") == "1:15"
        started_earlier(table, "run-server-0", 75)
        table._tick_uptime()  # no sample since the last tick: the clock updates it
        assert cell(table, "run-server-0", "up") == "1:15"


async def test_a_server_that_stops_answering_is_marked_not_left_with_old_figures() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 1, 8101, 7, "ready"))
        table.apply_telemetry(sample(1, 7))
        quiet = sample(
            1,
            7,
            answering=False,
            slots_busy=None,
            slots_total=None,
            tokens_predicted_total=None,
            tokens_per_s=None,
        )
        table.apply_telemetry(quiet)
        assert cell(table, "run-server-1", "state") == "not answering"
        assert (
            cell(table, "run-server-1", "tps") == "-"
            and cell(table, "run-server-1", "slots") == "-"
        )


async def test_a_crash_shows_its_exit_status_and_clears_figures() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 0, 8100, 42, "ready"))
        table.apply_telemetry(sample(0, 42))
        table.apply_state(ProcessState("server", 0, 8100, 42, "crashed", exit_code=-9))
        assert cell(table, "run-server-0", "state") == "crashed (-9)"
        assert cell(table, "run-server-0", "tps") == "-"


async def test_a_changed_value_renders_only_its_own_row_again() -> None:
    """DataTable rendered every cell on any update (~56 ms at 64 instances); here a sample
    re-renders its row alone, and an unchanged row is drawn from its kept line."""
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        for i in range(4):
            table.apply_state(ProcessState("server", i, 8100 + i, 40 + i, "ready"))
            table.apply_telemetry(sample(i, 40 + i))
        await pilot.pause()
        rendered_keys: list[str] = []
        real_render = table._render_row

        def spy(key: str, *args: object) -> object:
            rendered_keys.append(key)
            return real_render(key, *args)  # type: ignore[arg-type]

        table._render_row = spy  # type: ignore[method-assign]
        table.apply_telemetry(sample(2, 42, tokens_per_s=12.5))
        table.refresh()  # even a full repaint renders no other row again
        await pilot.pause()
        assert rendered_keys == ["run-server-2"]
        assert "12.5" in rendered(table, 3)


async def test_the_cursor_moves_with_keys_and_clicks_and_selects_its_row(
    tmp_path: Path,
) -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.focus()
        for i in range(3):
            log = tmp_path / f"server-{i}.log"
            table.apply_state(ProcessState("server", i, 8100 + i, 40 + i, "ready", log_path=log))
        await pilot.pause()
        assert table.selected() is table.rows_info["run-server-0"]
        await pilot.press("down", "down", "down")  # stops at the last row
        assert table.cursor_row == 2
        assert table.rows_info["run-server-2"] is table.selected()
        assert table.selected().state.log_path == tmp_path / "server-2.log"  # type: ignore[union-attr]
        await pilot.press("up")
        assert table.selected() is table.rows_info["run-server-1"]
        await pilot.click(InstanceTable, offset=(2, 1))  # line 1: the first row
        assert table.cursor_row == 0
        await pilot.click(InstanceTable, offset=(2, 0))  # the header selects nothing
        assert table.cursor_row == 0


async def test_a_long_table_scrolls_to_keep_the_cursor_and_header_in_view() -> None:
    class Short(App[None]):
        CSS = "InstanceTable { height: 5; }"

        def compose(self) -> ComposeResult:
            yield InstanceTable()

    async with Short().run_test(size=(80, 24)) as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.focus()
        for i in range(64):
            table.apply_state(ProcessState("server", i, 8100 + i, 1000 + i, "ready"))
        await pilot.pause()
        await pilot.press("end")
        await pilot.pause()
        assert rendered(table, 0).split()[0] == "Process"  # the header stays on top
        shown = [rendered(table, y).split()[1] for y in range(1, 5) if rendered(table, y).strip()]
        assert "63" in shown  # "server 63" is on screen


async def test_a_state_colours_its_text_from_the_theme_and_keeps_the_rows_stripe() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        for i in range(3):
            table.apply_state(ProcessState("server", i, 8100 + i, 40 + i, "ready"))
        await pilot.pause()
        name, *_, state = list(table.render_line(3))[:4]  # a striped row, off the cursor
        assert state.text.strip() == "ready" and name.style and state.style
        assert state.style.bgcolor == name.style.bgcolor
        success = pilot.app.current_theme.success
        assert state.style.color and state.style.color.triplet
        assert state.style.color.triplet.hex.lower() == str(success).lower()


async def test_forget_drops_the_owners_rows_and_keeps_the_cursor_on_a_row() -> None:
    async with Harness().run_test() as pilot:
        table = pilot.app.query_one(InstanceTable)
        table.apply_state(ProcessState("server", 0, 8100, 40, "ready", owner="cluster"))
        table.apply_state(ProcessState("server", 0, 8200, 50, "ready"))
        table.apply_state(ProcessState("server", 1, 8201, 51, "ready"))
        table.cursor_row = 2
        table.forget("run")
        await pilot.pause()
        assert list(table.rows_info) == ["cluster-server-0"] and table.row_count == 1
        assert table.selected() is table.rows_info["cluster-server-0"]
        assert "cluster server 0" in rendered(table, 1) and not rendered(table, 2).strip()
        table.apply_telemetry(sample(0, 50))  # a forgotten process's sample changes nothing
        assert table.cell("cluster-server-0", "tps") == "-"
        table.forget("cluster")
        assert table.selected() is None


async def test_log_pane_tails_a_growing_file(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("first line\n")
    async with Harness().run_test() as pilot:
        pane = pilot.app.query_one(LogPane)
        pane.follow(log)
        assert pane.lines[-1] == "first line"
        with log.open("a") as fh:
            fh.write("second line\npartial")
        await pilot.pause(0.8)
        assert pane.lines[-1] == "second line"


async def test_plot_history_stays_bounded() -> None:
    async with Harness().run_test() as pilot:
        plot = pilot.app.query_one(ThroughputPlot)
        for i in range(2000):
            plot.apply_telemetry(sample(0, 42, time=plot.t0 + i, tokens_per_s=float(i)))
            plot.apply_machine(machine_sample(plot.t0 + i, float(i)))
        plot.apply_cell(CellStarted(1, 2, {}))
        assert len(plot.total) == 600 and len(plot.per_instance[("run", 0)]) == 600
        await pilot.pause(0.6)


async def test_the_plots_total_is_the_engines_one_point_a_round() -> None:
    """The whole lab's line is what the engine summed (a point per machine sample), not a sum
    the plot makes of the instances' samples; a round with no rate adds no point."""
    async with Harness().run_test() as pilot:
        plot = pilot.app.query_one(ThroughputPlot)
        for second in range(3):
            for i in range(64):
                plot.apply_telemetry(sample(i, i, time=plot.t0 + second, tokens_per_s=1.5))
            plot.apply_machine(machine_sample(plot.t0 + second, 96.0))
        plot.apply_machine(machine_sample(plot.t0 + 3, None))
        assert [v for _, v in plot.total] == [96.0] * 3


async def test_a_runs_and_the_clusters_instance_0_are_two_lines() -> None:
    async with Harness().run_test() as pilot:
        plot = pilot.app.query_one(ThroughputPlot)
        plot.apply_telemetry(sample(0, 42, tokens_per_s=5.0))
        plot.apply_telemetry(sample(0, 50, tokens_per_s=7.0, owner="cluster"))
        assert {k: [v for _, v in s] for k, s in plot.per_instance.items()} == {
            ("run", 0): [5.0],
            ("cluster", 0): [7.0],
        }


def test_bytes_are_shown_in_human_units() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512B"
    assert human_bytes(3 * 1024**3) == "3.0G"
