"""Preset and last-settings files: round trips, one-line messages for broken files, model search."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_lab.engine.errors import LabError
from tui_lab.engine.machine import discovery
from tui_lab.engine.machine.discovery import GGUF_MAGIC, default_model_path
from tui_lab.engine.settings import presets
from tui_lab.engine.settings.run_settings import RunSettings


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("LLAMALAB_CONFIG", str(folder))
    return folder


def test_presets_round_trip_through_the_file(config_dir: Path) -> None:
    fast = RunSettings(kind="test-concurrent", parallel="4", concurrency="8", stream=True)
    path = presets.save_preset("fast one", fast)
    presets.save_preset("b-2_x", RunSettings())
    assert path == config_dir / "presets.toml"
    assert presets.load_presets() == {"fast one": fast, "b-2_x": RunSettings()}
    presets.delete_preset("fast one")
    assert list(presets.load_presets()) == ["b-2_x"]


def test_last_settings_are_defaults_until_saved() -> None:
    assert presets.load_last() == RunSettings()
    last = RunSettings(kind="sweep-threads", threads="2,4", model="/m/x.gguf")
    presets.save_last(last)
    assert presets.load_last() == last
    assert presets.load_last_or_default() == (last, None)


def test_saved_files_are_readable_by_the_user_only(config_dir: Path) -> None:
    presets.save_last(RunSettings(api_key="secret"))
    assert (config_dir / "last.toml").stat().st_mode & 0o777 == 0o600


def test_corrupt_toml_is_one_line_naming_the_file_and_line(config_dir: Path) -> None:
    config_dir.mkdir()
    path = config_dir / "presets.toml"
    path.write_text('[preset.a]\nparallel = "4"\nconcurrency = \n')
    with pytest.raises(LabError) as err:
        presets.load_presets()
    assert str(err.value).startswith(f"{path}: line 3: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("colour = 'red'", "unknown setting 'colour'"),
        ("stream = 'yes'", "stream must be true or false"),
    ],
)
def test_bad_setting_names_the_file_and_its_line(
    config_dir: Path, line: str, fragment: str
) -> None:
    config_dir.mkdir()
    path = config_dir / "presets.toml"
    path.write_text(f'[preset.a]\nparallel = "4"\n\n[preset."b c"]\nparallel = "2"\n{line}\n')
    with pytest.raises(LabError) as err:
        presets.load_presets()
    assert str(err.value) == f"{path}: line 6: {fragment}"


def test_saving_a_preset_never_overwrites_a_corrupt_file(config_dir: Path) -> None:
    config_dir.mkdir()
    path = config_dir / "presets.toml"
    path.write_text("[preset.a\n")
    with pytest.raises(LabError, match="line 1"):
        presets.save_preset("b", RunSettings())
    assert path.read_text() == "[preset.a\n"


def test_a_corrupt_last_file_gives_defaults_and_the_message(config_dir: Path) -> None:
    config_dir.mkdir()
    (config_dir / "last.toml").write_text('parallel = "4"\nthreads = [1]\n')
    settings, problem = presets.load_last_or_default()
    assert settings == RunSettings()
    assert problem is not None
    assert problem.startswith(f"{config_dir / 'last.toml'}: line 2: threads must be text")


@pytest.mark.parametrize("name", ["", "   ", "a/b", "x.y", "dé", "a\nb"])
def test_preset_names_outside_letters_digits_dash_underscore_space_are_refused(name: str) -> None:
    with pytest.raises(LabError, match="preset name"):
        presets.save_preset(name, RunSettings())


def gguf(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(GGUF_MAGIC + b"\0" * 8)
    return path


def test_model_candidates_are_found_down_to_max_depth_and_no_deeper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    shallow = gguf(home / "models" / "a.gguf")
    at_max = gguf(home / "Downloads" / "x" / "y" / "z" / "b.GGUF")
    studio = gguf(home / ".lmstudio" / "models" / "pub" / "repo" / "c.gguf")
    here = gguf(tmp_path / "models" / "d.gguf")
    default = gguf(default_model_path())
    too_deep = gguf(home / "models" / "1" / "2" / "3" / "4" / "e.gguf")
    hidden = gguf(home / "models" / ".git" / "f.gguf")
    (home / "models" / "notes.txt").write_text("not a model")

    found = discovery.find_model_candidates(max_depth=3)

    assert {shallow, at_max, studio, here, default} <= set(found)
    assert too_deep not in found and hidden not in found
    assert found == sorted(found) and len(found) == len(set(found))
    assert too_deep in discovery.find_model_candidates(max_depth=4)
