"""One sweep as the report, compare and the trade-off view read it: its rows, and from its meta
file the machine, the settings and the latency bounds.

A results file without its meta file (copied alone, or written before meta files existed) is
still read: its machine and settings are then empty and say so, rather than refusing the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tui_lab.engine.errors import LabError
from tui_lab.engine.plan.search import SearchSettings
from tui_lab.engine.results.reader import ResultsFileError, read_meta, read_rows
from tui_lab.engine.settings.run_settings import RunSettings, search_settings

# The recorded settings the bounds are read from: only these, so a file recorded by an older or
# newer lab (a setting since renamed or added) still gives its bounds.
_BOUND_SETTINGS = ("max_p99_ms", "max_ttft_ms", "stream")


@dataclass(frozen=True)
class SweepFile:
    path: Path
    rows: tuple[Mapping[str, object], ...]
    machine: Mapping[str, object] = field(default_factory=dict)
    settings: Mapping[str, object] = field(default_factory=dict)  # as the user typed them
    bounds: SearchSettings = field(default_factory=SearchSettings)
    started_at: str | None = None
    has_meta: bool = False

    @property
    def name(self) -> str:
        return self.path.name


def load_sweep(path: Path) -> SweepFile:
    """The sweep of a .jsonl or .csv results file; a missing, foreign or empty file is one line."""
    if not path.is_file():
        raise ResultsFileError(f"results file not found: {path}")
    rows = read_rows(path)
    if not rows:
        raise ResultsFileError(f"{path}: no rows (the sweep measured no cell yet)")
    meta_path = path.with_suffix(".meta.json")
    if not meta_path.is_file():
        return SweepFile(path, tuple(rows))
    meta = read_meta(meta_path)
    config = _mapping(meta.get("config"))
    settings = _mapping(config.get("settings"))
    return SweepFile(
        path,
        tuple(rows),
        machine=_mapping(meta.get("machine")),
        settings=settings,
        bounds=_bounds(settings, meta_path),
        started_at=str(meta["started_at"]) if "started_at" in meta else None,
        has_meta=True,
    )


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _bounds(settings: Mapping[str, object], meta_path: Path) -> SearchSettings:
    given = {k: settings[k] for k in _BOUND_SETTINGS if k in settings}
    try:
        return search_settings(RunSettings.from_mapping(given, str(meta_path)))
    except LabError as exc:
        raise ResultsFileError(f"{meta_path}: recorded bounds unusable: {exc}") from None


def recorded_bounds(path: Path) -> SearchSettings:
    """The latency bounds the sweep of `path` ran under; none when it has no meta file."""
    meta_path = path.with_suffix(".meta.json")
    if not meta_path.is_file():
        return SearchSettings()
    settings = _mapping(_mapping(read_meta(meta_path).get("config")).get("settings"))
    return _bounds(settings, meta_path)
