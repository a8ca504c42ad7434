"""Named presets and the last used settings, kept as TOML in the user's config folder.

Both files hold a user's own text, so a hand edit that breaks them must come back as one line
naming the file and the line, never a traceback; and both may hold an API key, so they are
written readable by the user only.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from tui_lab.engine.errors import LabError
from tui_lab.engine.settings.run_settings import RunSettings

CONFIG_ENV = "LLAMALAB_CONFIG"
PRESET_NAME = re.compile(r"[A-Za-z0-9_\- ]+")


def config_dir() -> Path:
    override = os.environ.get(CONFIG_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir("llamalab"))


def presets_path() -> Path:
    return config_dir() / "presets.toml"


def last_path() -> Path:
    return config_dir() / "last.toml"


def load_presets() -> dict[str, RunSettings]:
    path = presets_path()
    text, data = _read(path)
    lines = _key_lines(text)
    for key, value in data.items():
        if key != "preset" or not isinstance(value, dict):
            raise LabError(f"{_at(path, lines, key)}: expected only [preset.NAME] tables")
    presets: dict[str, RunSettings] = {}
    for name, table in data.get("preset", {}).items():
        if not isinstance(table, dict):
            raise LabError(f"{_at(path, lines, 'preset', name)}: expected a [preset.NAME] table")
        presets[name] = _settings(table, path, lines, ("preset", name))
    return presets


def save_preset(name: str, settings: RunSettings) -> Path:
    """Add or replace one preset; a corrupt file raises first rather than losing the others."""
    name = check_preset_name(name)
    presets = load_presets()
    presets[name] = settings
    return _write_presets(presets)


def delete_preset(name: str) -> None:
    presets = load_presets()
    if presets.pop(name, None) is None:
        raise LabError(f"{presets_path()}: no preset named {name!r}")
    _write_presets(presets)


def check_preset_name(name: str) -> str:
    """Names become TOML keys and menu entries: keep them to what reads well in both."""
    name = name.strip()
    if not PRESET_NAME.fullmatch(name):
        raise LabError(
            f"preset name {name!r}: use letters, digits, '-', '_' and spaces only"
            if name
            else "preset name: type a name first"
        )
    return name


def load_last() -> RunSettings:
    path = last_path()
    text, data = _read(path)
    return _settings(data, path, _key_lines(text), ())


def load_last_or_default() -> tuple[RunSettings, str | None]:
    """A broken last.toml must not stop the app from starting: defaults, plus what to tell."""
    try:
        return load_last(), None
    except LabError as exc:
        return RunSettings(), f"{exc} (using defaults)"


def save_last(settings: RunSettings) -> None:
    _write(last_path(), settings.to_mapping())


def _write_presets(presets: dict[str, RunSettings]) -> Path:
    path = presets_path()
    _write(path, {"preset": {name: s.to_mapping() for name, s in sorted(presets.items())}})
    return path


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The text (to locate lines in) and the parsed TOML; an absent file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "", {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"{path}: cannot read ({exc})") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "Invalid value (at line 3, column 7)"; lead with the line like the rest.
        found = re.fullmatch(r"(.*) \(at (?:line (\d+), column (\d+)|end of document)\)", str(exc))
        if found is None:
            raise LabError(f"{path}: {exc}") from None
        reason, line, column = found.groups()
        if line is None:  # e.g. an unclosed array: the file ends where it should not
            last = len(text.splitlines()) or 1
            raise LabError(f"{path}: line {last}: {reason} (the file ends too early)") from None
        raise LabError(f"{path}: line {line}: {reason} (column {column})") from None


def _settings(
    table: dict[str, Any], path: Path, lines: dict[tuple[str, ...], int], at: tuple[str, ...]
) -> RunSettings:
    """Check key by key so that the message can point at the offending line."""
    for key, value in table.items():
        RunSettings.from_mapping({key: value}, _at(path, lines, *at, key))
    return RunSettings.from_mapping(table, str(path))


def _at(path: Path, lines: dict[tuple[str, ...], int], *keys: str) -> str:
    line = lines.get(keys)
    return f"{path}: line {line}" if line else str(path)


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The first line that sets each key path: tomllib keeps no positions, so look line by line."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            table = keys = _key_path(stripped)
        else:
            keys = table + _key_path(stripped)
        for end in range(1, len(keys) + 1):
            lines.setdefault(keys[:end], number)
    return lines


def _key_path(line: str) -> tuple[str, ...]:
    """The keys a `[a."b c"]` header or an `a.b = 1` line names, parsed by tomllib for quoting;
    () for a comment, a blank line or a line that only parses with its neighbours."""
    try:
        parsed: Any = tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return ()
    keys: list[str] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key, parsed = next(iter(parsed.items()))
        keys.append(key)
    return tuple(keys)


def _write(path: Path, data: dict[str, Any]) -> None:
    """Temp file + rename: a crash mid-write leaves the old file, never half a new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:  # mkstemp makes it 0600: the API key stays private
                tomli_w.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise LabError(f"{path}: cannot write ({exc.strerror})") from None
