"""The configure form as a person uses it: typing, fixing, presets, the model picker, Run, Back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Button, Input, OptionList, Static

from tests.helpers import START, Harness, settle, type_into, widget_text
from tui_lab.engine.machine.discovery import GGUF_MAGIC
from tui_lab.engine.settings import registry
from tui_lab.engine.settings.run_settings import cluster_layout
from tui_lab.screens import configure
from tui_lab.screens.cluster_modal import ClusterModal
from tui_lab.screens.configure import ConfigureScreen
from tui_lab.screens.model_picker import GgufTree, ModelPicker


def run_disabled(pilot: Pilot[None]) -> bool:
    return pilot.app.screen.query_one("#run", Button).disabled


async def submit(pilot: Pilot[None], *keys: str) -> None:
    """Press ctrl+s (or the keys given), and wait for the form to check and leave."""
    await pilot.press(*(keys or ("ctrl+s",)))
    await until(pilot, lambda: bool(pilot.app.results))


async def test_every_setting_has_a_field() -> None:
    async with Harness().run_test() as pilot:
        screen = pilot.app.screen
        for setting in registry.settings():
            assert screen.query_one(f"#{setting.name}").has_class("setting"), setting.name


async def test_a_malformed_list_is_explained_and_blocks_run_until_fixed() -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = widget_text(pilot, "#estimate")
        assert before == "8 cells, 4 server layouts, 72 measured requests"
        await pilot.press("tab", "tab", *"1,,x")  # kind -> instances -> parallel
        await settle(pilot)
        message = "--parallel: empty item in '1,,x'; give values like 1,2,4"
        assert widget_text(pilot, "#error-parallel") == message
        assert pilot.app.screen.query_one("#parallel", Input).has_class("-invalid")
        assert widget_text(pilot, "#estimate") == message
        assert run_disabled(pilot)

        await pilot.press("backspace", "backspace", *"2,4")
        await settle(pilot)
        assert not pilot.app.screen.query_one("#error-parallel").display
        assert not pilot.app.screen.query_one("#parallel", Input).has_class("-invalid")
        assert (
            widget_text(pilot, "#estimate") == "12 cells, 6 server layouts, 108 measured requests"
        )
        assert not run_disabled(pilot)


async def test_ctrl_s_on_an_invalid_form_stays_on_the_form() -> None:
    async with Harness().run_test() as pilot:
        await type_into(pilot, "host", "my-box")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert pilot.app.results == []
        assert isinstance(pilot.app.screen, ConfigureScreen)


async def test_switching_to_a_single_test_hides_the_fields_it_ignores() -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        screen = pilot.app.screen
        assert screen.query_one("#field-instances").display
        await pilot.press("enter", "home", "enter")  # the kind menu is focused first
        await settle(pilot)
        assert screen.query_one("#kind").value == "test-single"
        for hidden in ("instances", "parallel", "concurrency", "batch_size", "balance"):
            assert not screen.query_one(f"#field-{hidden}").display, hidden
        assert screen.query_one("#field-n_predict").display
        assert widget_text(pilot, "#estimate") == "1 cells, 1 server layouts, 1 measured requests"


async def test_the_adaptive_sweep_shows_its_own_fields_and_checks_them() -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        screen = pilot.app.screen
        assert not screen.query_one("#field-plateau").display  # a full sweep has no plateau
        await pilot.press("enter", "end", "enter")  # the last kind in the menu
        await settle(pilot)
        assert screen.query_one("#kind").value == "sweep-adaptive"
        for shown in ("instances", "concurrency", "plateau", "finalists", "max_p99_ms"):
            assert screen.query_one(f"#field-{shown}").display, shown
        assert widget_text(pilot, "#estimate") == (
            "searches 8 cells of 4 layouts: short probes, then full cells for the 3 best"
        )
        await type_into(pilot, "max_ttft_ms", "500")
        assert widget_text(pilot, "#estimate") == (
            "--max-ttft-ms: TTFT is measured only with --stream"
        )
        assert run_disabled(pilot)
        await type_into(pilot, "plateau", "x")
        assert widget_text(pilot, "#error-plateau") == "--plateau: 'x' is not a number"


async def test_run_dismisses_with_exactly_what_was_typed() -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        await type_into(pilot, "parallel", "2,8")
        await type_into(pilot, "n_predict", "128")
        await type_into(pilot, "server_args", "-ngl 99")
        pilot.app.screen.query_one("#stream").focus()
        await pilot.press("space")
        await pilot.click("#run")
        await until(pilot, lambda: bool(pilot.app.results))
        assert pilot.app.results == [
            START.with_values(parallel="2,8", n_predict="128", server_args="-ngl 99", stream=True)
        ]


async def test_ctrl_s_runs_and_remembers_the_settings(config_dir: Path) -> None:
    async with Harness().run_test() as pilot:
        await type_into(pilot, "concurrency", "16")
        await submit(pilot)
        assert pilot.app.results == [START.with_values(concurrency="16")]
        assert 'concurrency = "16"' in (config_dir / "last.toml").read_text()


async def test_escape_goes_back_with_nothing() -> None:
    async with Harness().run_test() as pilot:
        await type_into(pilot, "parallel", "3")
        await pilot.press("escape")
        await pilot.pause()
        assert pilot.app.results == [None]


async def test_a_saved_preset_is_written_and_loads_back_into_the_form(config_dir: Path) -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        screen = pilot.app.screen
        await type_into(pilot, "parallel", "2,6")
        await type_into(pilot, "preset-name", "six slots")
        await pilot.click("#preset-save")
        await pilot.pause()
        assert '[preset."six slots"]' in (config_dir / "presets.toml").read_text()

        await type_into(pilot, "parallel", "1")
        await type_into(pilot, "preset-name", "")
        screen.query_one("#preset-list").focus()
        await pilot.press("enter", "down", "enter")  # open the menu, pass the prompt, pick
        await pilot.pause()
        assert screen.query_one("#parallel", Input).value == "2,6"
        assert screen.query_one("#preset-name", Input).value == "six slots"


async def test_a_corrupt_presets_file_is_reported_and_the_form_still_runs(
    config_dir: Path,
) -> None:
    config_dir.mkdir()
    path = config_dir / "presets.toml"
    path.write_text("[preset.a]\nparallel = \n")
    async with Harness().run_test() as pilot:
        messages = [n.message for n in pilot.app._notifications]
        assert f"{path}: line 2: Invalid value (column 12)" in messages
        await type_into(pilot, "parallel", "2")
        await submit(pilot)
        assert pilot.app.results == [START.with_values(parallel="2")]


async def until(pilot: Pilot[None], check: Callable[[], bool]) -> None:
    """Wait for a worker's result to show; DirectoryTree's loader never finishes, so poll."""
    for _ in range(100):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError("not shown in time")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder with one model in ~/models, one beside other files, and no default model."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    for model in (home / "models" / "tiny.gguf", home / "loose.gguf"):
        model.write_bytes(GGUF_MAGIC + b"\0" * 8)
    for other in ("notes.txt", "weights.bin"):
        (home / other).write_text("not a model")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


async def open_picker(pilot: Pilot[None]) -> ModelPicker:
    pilot.app.screen.query_one("#browse").focus()
    await pilot.press("enter")
    picker = pilot.app.screen
    assert isinstance(picker, ModelPicker)
    return picker


async def test_the_model_picker_fills_the_model_field(home: Path) -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        screen = pilot.app.screen
        await type_into(pilot, "model", "/no/such.gguf")
        assert widget_text(pilot, "#error-model") == "model not found: /no/such.gguf"
        assert run_disabled(pilot)

        picker = await open_picker(pilot)
        found = picker.query_one("#found", OptionList)
        await until(pilot, lambda: found.get_option_at_index(0).id is not None)
        # ~ itself is for browsing: only the usual folders are searched
        assert found.option_count == 1
        await pilot.press("enter")
        await settle(pilot)
        assert pilot.app.screen is screen
        assert screen.query_one("#model", Input).value == str(home / "models" / "tiny.gguf")
        assert not screen.query_one("#error-model").display
        assert not run_disabled(pilot)


async def test_the_search_depth_reaches_deeper_model_folders(home: Path) -> None:
    deep = home / "models" / "org" / "repo" / "snapshots" / "rev" / "deep.gguf"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(GGUF_MAGIC + b"\0" * 8)
    async with Harness().run_test(size=(100, 30)) as pilot:
        picker = await open_picker(pilot)
        found = picker.query_one("#found", OptionList)
        await until(pilot, lambda: found.get_option_at_index(0).id is not None)
        assert found.option_count == 1  # three folders down by default: not deep enough
        picker.query_one("#depth", Input).value = "4"
        await until(pilot, lambda: found.option_count == 2)
        assert found.get_option_at_index(0).id == str(deep)
        picker.query_one("#depth", Input).value = "x"  # not a depth: the list stays
        await pilot.pause(0.2)
        assert found.option_count == 2


async def test_the_browse_tree_shows_only_folders_and_gguf_files(home: Path) -> None:
    async with Harness().run_test() as pilot:
        tree = (await open_picker(pilot)).query_one(GgufTree)
        await until(pilot, lambda: bool(tree.root.children))
        assert {str(node.label) for node in tree.root.children} == {"models", "loose.gguf"}


async def test_escape_leaves_the_model_picker_without_a_choice(home: Path) -> None:
    async with Harness().run_test() as pilot:
        await open_picker(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfigureScreen)
        assert pilot.app.screen.query_one("#model", Input).value == ""


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot_configure_form(snap_compare: object, size: tuple[int, int]) -> None:
    assert snap_compare(Harness(), run_before=settle, terminal_size=size)  # type: ignore[operator]


def test_snapshot_configure_form_with_an_error_at_80x24(snap_compare: object) -> None:
    async def type_an_error(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("tab", "tab", "1", ",", ",", "x")
        await settle(pilot)

    # `end` (the cursor is there already) shows the cursor again, as right after typing.
    assert snap_compare(  # type: ignore[operator]
        Harness(), run_before=type_an_error, press=["end"], terminal_size=(80, 24)
    )


async def test_binding_every_interface_is_warned_about_but_allowed() -> None:
    async with Harness().run_test(size=(120, 40)) as pilot:
        await type_into(pilot, "host", "0.0.0.0")
        note = pilot.app.screen.query_one("#error-host", Static)
        assert note.display and note.has_class("-warning")
        assert "every interface without an API key" in widget_text(pilot, "#error-host")
        assert not run_disabled(pilot)
        await type_into(pilot, "api_key", "s3cret")
        await type_into(pilot, "host", "0.0.0.0")
        assert "clients need the API key" in widget_text(pilot, "#error-host")
        await type_into(pilot, "host", "127.0.0.1")
        assert not note.display


async def test_the_cluster_modal_warns_before_binding_every_interface() -> None:
    class ClusterHarness(App[None]):
        def on_mount(self) -> None:
            self.push_screen(ClusterModal(START))

    async with ClusterHarness().run_test(size=(100, 30)) as pilot:
        await type_into(pilot, "cluster-host", "0.0.0.0")
        assert "every interface" in widget_text(pilot, "#cluster-error")
        assert pilot.app.screen.query_one("#cluster-error").has_class("-warning")
        assert not pilot.app.screen.query_one("#cluster-start", Button).disabled


async def test_a_layout_too_large_for_memory_is_flagged_but_can_still_run() -> None:
    """Sweeps skip the cells that cannot fit, so Run stays enabled; the line says which."""
    async with Harness().run_test(size=(80, 24)) as pilot:
        assert "does not fit" not in widget_text(pilot, "#estimate")
        await type_into(pilot, "ctx_per_slot", str(10**9))
        line = widget_text(pilot, "#estimate")
        assert line.startswith("8 cells, 4 server layouts, 72 measured requests; largest layout")
        assert "does not fit: 2 instance(s) need " in line
        assert pilot.app.screen.query_one("#estimate").has_class("-error")
        assert not run_disabled(pilot)


async def test_placement_and_server_dimensions_are_offered_and_checked_as_typed() -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        await type_into(pilot, "placement", "pinned,shared")
        await type_into(pilot, "server_dim", "-fa on|-fa off")
        assert (
            widget_text(pilot, "#estimate") == "32 cells, 16 server layouts, 288 measured requests"
        )
        await type_into(pilot, "placement", "tight")
        assert widget_text(pilot, "#error-placement").startswith(
            "--placement: 'tight' is not one of shared, pinned"
        )
        assert run_disabled(pilot)
        # Pinning more instances than there are cores: one line, and nothing can start.
        await type_into(pilot, "placement", "pinned")
        await type_into(pilot, "instances", "1,512")
        assert "512 instances need 512 physical cores" in widget_text(pilot, "#estimate")
        assert run_disabled(pilot)
        await type_into(pilot, "instances", "1")
        await type_into(pilot, "server_dim", "-fa on|-fa on")
        assert widget_text(pilot, "#error-server_dim") == (
            "--server-dim: '-fa on|-fa on' repeats an alternative"
        )
        await type_into(pilot, "server_dim", "")
        await submit(pilot)
    assert pilot.app.results[-1] == START.with_values(instances="1", placement="pinned")


def test_the_cluster_modal_takes_one_value_of_each_swept_server_setting() -> None:
    """A sweep's lists (placements, models, thread counts) are not the cluster's to refuse:
    it starts with one of each, as with instances and slots."""
    sweep = START.with_values(placement="shared,pinned", model="/m/a.gguf|/m/b.gguf")
    modal = ClusterModal(sweep.with_values(kind="sweep-threads", threads="1,auto"))
    layout = cluster_layout(modal.settings)
    assert (layout.placement, layout.threads, layout.model) == ("pinned", "auto", Path("/m/a.gguf"))


async def test_typing_never_waits_for_the_plan_and_memory_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pre-flight reads the model and NVML: a slow one must not hold up the keys typed."""
    real = configure.largest

    def slow_largest(*args: object, **kwargs: object) -> object:
        time.sleep(1.5)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(configure, "largest", slow_largest)
    async with Harness().run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        field = pilot.app.screen.query_one("#parallel", Input)
        field.focus()
        await pilot.pause()
        started = time.monotonic()
        await pilot.press("ctrl+a", "ctrl+k", *"2,4,x")
        await pilot.pause()
        assert field.value == "2,4,x"
        assert time.monotonic() - started < 1.0
        await settle(pilot)
        assert widget_text(pilot, "#error-parallel") == "--parallel: 'x' is not a whole number"
        await pilot.press("backspace", "backspace")
        await settle(pilot)
        assert widget_text(pilot, "#estimate") == "8 cells, 4 server layouts, 72 measured requests"


async def test_the_workloads_are_offered_and_checked_as_typed() -> None:
    async with Harness().run_test(size=(80, 24)) as pilot:
        screen = pilot.app.screen
        menu = screen.query_one("#workload")
        assert [value for _, value in registry.setting("workload").choices] == [
            "fixed", "synthetic", "shared-prefix", "multi-turn", "file"
        ]  # fmt: skip
        menu.value = "multi-turn"  # type: ignore[attr-defined]
        await settle(pilot)
        await type_into(pilot, "sessions", "3")
        await type_into(pilot, "turns", "2")
        assert widget_text(pilot, "#estimate") == "8 cells, 4 server layouts, 48 measured requests"
        await type_into(pilot, "turns", "0")
        assert widget_text(pilot, "#error-turns") == "--turns: 0 is below 1"
        assert run_disabled(pilot)
        await type_into(pilot, "turns", "2")
        await type_into(pilot, "prompt_tokens", "uniform(9,3)")
        assert widget_text(pilot, "#error-prompt_tokens") == (
            "--prompt-tokens: 'uniform(9,3)': min 9 is above max 3"
        )
        await type_into(pilot, "prompt_tokens", "uniform(3,9)")
        await submit(pilot)
    assert pilot.app.results[-1] == START.with_values(
        workload="multi-turn", sessions="3", turns="2", prompt_tokens="uniform(3,9)"
    )
