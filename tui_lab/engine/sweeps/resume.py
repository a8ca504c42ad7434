"""Resuming an interrupted sweep: the same plan from its recorded settings, only the cells with
no row yet, appended to the same files.

A sweep records its settings in <stem>.meta.json (`recorded_config`) for this reason: so that a
sweep killed after hours (OOM killer, reboot, a dropped terminal) goes on where it stopped
instead of starting over, and its files end up as if it had never been interrupted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_lab.engine.errors import LabError
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.plan.runs import Plan
from tui_lab.engine.results.reader import read_meta, read_rows
from tui_lab.engine.settings.run_settings import RunSettings, build_plan
from tui_lab.engine.sweeps.runner import cell_row

# Settings that say how to run, not what to measure: never recorded, chosen again at resume.
NOT_RECORDED = ("api_key", "detach")


def recorded_config(
    settings: RunSettings, plan: Plan, lab: LabConfig, argv: Sequence[str] = ()
) -> dict[str, Any]:
    """The `config` of a sweep's meta file: enough to rebuild its plan (and nothing secret)."""
    recorded = settings.to_mapping()
    for name in NOT_RECORDED:
        recorded.pop(name, None)
    return {
        "run": plan.run,
        "argv": list(argv),
        "cells": len(plan.cells),
        "requests": plan.requests,
        "server_bin": str(lab.server_bin),
        # Every model the plan runs, as resolved now, `|` between them as in the setting.
        "model": "|".join(dict.fromkeys(str(c.layout.model or lab.model) for c in plan.cells)),
        "nginx_bin": str(lab.nginx_bin) if lab.nginx_bin else None,
        "settings": recorded,
    }


@dataclass(frozen=True)
class Resumption:
    """What is left of a sweep: its plan, the cells that already have a row, its meta file."""

    settings: RunSettings
    plan: Plan
    done: frozenset[int]  # 1-based cell indices
    meta_path: Path

    @property
    def todo(self) -> list[int]:
        return [i for i in range(1, len(self.plan.cells) + 1) if i not in self.done]


def meta_path_of(results_file: Path) -> Path:
    if results_file.suffix not in (".jsonl", ".csv"):
        raise LabError(f"{results_file}: not a results file (expected .jsonl or .csv)")
    if not results_file.is_file():
        raise LabError(f"results file not found: {results_file}")
    return results_file.with_suffix(".meta.json")


def load(results_file: Path, *, retry_failed: bool = False, api_key: str = "") -> Resumption:
    """Rebuild the plan of the sweep that wrote `results_file` and find its cells left to run.

    A row counts as done when its cell index and parameters match the plan's cell (a row with an
    error too, unless `retry_failed`); a row that matches no cell means the files are not this
    plan's, and nothing is started.
    """
    meta_path = meta_path_of(results_file)
    meta = read_meta(meta_path)
    config = meta.get("config")
    recorded = config.get("settings") if isinstance(config, Mapping) else None
    if not isinstance(config, Mapping) or not isinstance(recorded, dict):
        raise LabError(f"{meta_path}: no recorded settings; this sweep cannot be resumed")
    settings = RunSettings.from_mapping(recorded, str(meta_path)).with_values(
        api_key=api_key, **_resolved_paths(config)
    )
    try:
        plan = build_plan(settings)
    except LabError as exc:
        raise LabError(f"{meta_path}: the recorded settings no longer make a plan: {exc}") from None
    if plan.run != meta["sweep_name"] or config.get("cells") not in (None, len(plan.cells)):
        raise LabError(
            f"{meta_path}: the recorded settings now give {len(plan.cells)} cells of {plan.run}, "
            f"not the {config.get('cells')} of {meta['sweep_name']} it ran"
        )
    jsonl = meta_path.with_name(str(meta["jsonl"]))
    rows = read_rows(jsonl)
    # A detached sweep starts as the resume of its empty files; that much an adaptive one can do.
    if plan.search is not None and rows:
        raise LabError(
            f"{meta_path}: an adaptive sweep is started again, not resumed: what it measures "
            "next depends on what it has measured"
        )
    _check_columns(jsonl, rows, plan)
    done = _done_cells(jsonl, rows, plan, retry_failed)
    return Resumption(settings, plan, frozenset(done), meta_path)


def _resolved_paths(config: Mapping[str, Any]) -> dict[str, str]:
    """The server, model and nginx the sweep found when it started, not whatever is found now:
    a cell measured with another binary would not belong in the same table."""
    return {
        name: str(config[name])
        for name in ("server_bin", "model", "nginx_bin")
        if isinstance(config.get(name), str)
    }


def _check_columns(jsonl: Path, rows: list[dict[str, object]], plan: Plan) -> None:
    """Rows of another version of the lab have other columns: appending to them would break
    the CSV, so such a sweep is started again rather than resumed."""
    if not rows:
        return
    expected = set(cell_row(plan, 1, plan.cells[0], None, None, None))
    if set(rows[0]) != expected:
        differ = sorted(set(rows[0]) ^ expected)
        raise LabError(
            f"{jsonl}: written by another version of llamalab (columns differ: "
            f"{', '.join(differ[:6])}{', ...' if len(differ) > 6 else ''}); start it again"
        )


def _done_cells(
    jsonl: Path, rows: list[dict[str, object]], plan: Plan, retry_failed: bool
) -> set[int]:
    done: set[int] = set()
    for number, row in enumerate(rows, 1):
        index = row.get("cell")
        if not isinstance(index, int) or not 1 <= index <= len(plan.cells):
            raise LabError(
                f"{jsonl}: row {number} is cell {index!r}, not one of this sweep's "
                f"1..{len(plan.cells)}"
            )
        for key, value in plan.cells[index - 1].params().items():
            if row.get(key) != value:
                raise LabError(
                    f"{jsonl}: row {number} (cell {index}) has {key}={row.get(key)!r} where the "
                    f"sweep's plan has {value!r}; not this sweep's files"
                )
        if not (retry_failed and row.get("error")):
            done.add(index)
    return done
