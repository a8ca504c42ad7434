"""Settings declared once: a setting added to the registry reaches the CLI, the form and presets."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Label

from tests.helpers import Harness, settle, type_into, widget_text
from tui_lab.cli import main as cli
from tui_lab.cli import parser
from tui_lab.engine.settings import presets, registry
from tui_lab.engine.settings import values as v
from tui_lab.engine.settings.registry import LOAD, Setting
from tui_lab.engine.settings.run_settings import RunSettings, cluster_args, defaults_for
from tui_lab.engine.settings.spec import RunSpec, parse

WARMUP = Setting(
    "warmup_requests",
    "1",
    "Warm-up requests",
    "Load",
    v.whole_number,
    help="requests each server answers before a cell is measured",
    section="load",
    commands=LOAD,
)


@pytest.fixture
def with_warmup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setting:
    monkeypatch.setenv("LLAMALAB_CONFIG", str(tmp_path / "config"))
    monkeypatch.setattr(registry, "SETTINGS", (*registry.SETTINGS, WARMUP))
    return WARMUP


def test_an_added_setting_is_a_flag_of_sweep_with_its_help(
    with_warmup: Setting, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--warmup-requests WARMUP_REQUESTS requests each server answers before a cell" in shown
    args = parser.build_parser().parse_args(["sweep", "full", "--warmup-requests", "3"])
    assert parser.settings_from_args(args).warmup_requests == "3"
    assert RunSettings().warmup_requests == "1"


async def test_an_added_setting_is_a_row_of_the_form_checked_and_saved_in_a_preset(
    with_warmup: Setting, tmp_path: Path
) -> None:
    async with Harness(RunSettings()).run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        row = screen.query_one("#field-warmup_requests")
        assert "Warm-up requests" in [str(label.content) for label in row.query(Label)]
        await type_into(pilot, "warmup_requests", "0")
        assert widget_text(pilot, "#error-warmup_requests") == "--warmup-requests: 0 is below 1"
        await type_into(pilot, "warmup_requests", "3")
        assert not screen.query_one("#error-warmup_requests").display
        await type_into(pilot, "preset-name", "warm")
        await pilot.click("#preset-save")
        await pilot.pause()
    saved = (tmp_path / "config" / "presets.toml").read_text()
    assert 'warmup_requests = "3"' in saved
    assert presets.load_presets()["warm"].warmup_requests == "3"


def test_the_spec_holds_every_setting_of_the_registry_typed() -> None:
    spec_fields = set(RunSpec.__dataclass_fields__) - {"context"}
    assert spec_fields == {s.name for s in registry.settings()}
    spec = parse(defaults_for("sweep-threads").with_values(threads="1,auto"))
    assert (spec.threads, spec.concurrency, spec.instances) == ((1, "auto"), (8,), (1, 2))


def test_which_run_reads_which_setting_comes_from_the_registry() -> None:
    assert defaults_for("test-concurrent").parallel == "4"
    assert defaults_for("sweep-full").parallel == "1,4"
    flags = cluster_args(RunSettings(instances="2", upstream_keepalive=True))
    assert flags[:2] == ["--instances", "2"] and "--upstream-keepalive" in flags
    assert "--n-predict" not in flags  # `cluster start` does not take it
