"""`llamalab compare` on two real sweeps of the default model: the deltas, and which of them lie
within the noise once the rows carry intervals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig

pytestmark = pytest.mark.integration

FIGURE = "output_tok_per_s"


def small_sweep(lab: LabConfig, results: Path, *more: str) -> Path:
    out = llamalab(
        "sweep", "full", "--instances", "1", "--parallel", "2", "--concurrency", "1,2",
        "--n-predict", "8", "--requests", "4", "--threads", "1",
        "--results", str(results), *ports(lab), *more,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (jsonl,) = results.glob("sweep-full-*.jsonl")
    return jsonl


def cell_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("1×2 c=")]


def with_intervals(jsonl: Path, folder: Path, half_width: float) -> Path:
    """A copy of a sweep whose rows carry a 95 % interval of +-`half_width` (a fraction) around
    their tok/s, as repeated measurements write it."""
    folder.mkdir()
    copy = folder / jsonl.name
    shutil.copy(jsonl.with_suffix(".meta.json"), copy.with_suffix(".meta.json"))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for row in rows:
        value = row[FIGURE]
        row[f"{FIGURE}_ci_low"] = value * (1 - half_width)
        row[f"{FIGURE}_ci_high"] = value * (1 + half_width)
    copy.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return copy


def test_compare_two_real_sweeps_prints_deltas_and_marks_the_noise(
    lab: LabConfig, tmp_path: Path
) -> None:
    a = small_sweep(lab, tmp_path / "a")
    b = small_sweep(lab, tmp_path / "b", "--request-timeout", "300")
    out = llamalab("compare", str(a), str(b))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # The settings that differ come first, before the cells.
    assert text.index("request_timeout") < text.index("2 cells in both"), text
    lines = cell_lines(text)
    assert len(lines) == 2
    assert all("no interval" in line for line in lines)  # plain rows: no pretended verdict
    a_rows = [json.loads(line) for line in a.read_text().splitlines()]
    b_rows = [json.loads(line) for line in b.read_text().splitlines()]
    first = (b_rows[0][FIGURE] - a_rows[0][FIGURE]) / a_rows[0][FIGURE] * 100
    assert f"{first:.2f}" in lines[0]  # the delta %, as measured

    wide = llamalab(
        "compare",
        str(with_intervals(a, tmp_path / "a-wide", 0.5)),
        str(with_intervals(b, tmp_path / "b-wide", 0.5)),
    )
    assert len(cell_lines(wide.stdout)) == 2
    assert all("within the noise" in line for line in cell_lines(wide.stdout)), wide.stdout
    narrow = llamalab(
        "compare",
        str(with_intervals(a, tmp_path / "a-narrow", 1e-6)),
        str(with_intervals(b, tmp_path / "b-narrow", 1e-6)),
    )
    assert len(cell_lines(narrow.stdout)) == 2
    assert all("exceeds the intervals" in line for line in cell_lines(narrow.stdout)), narrow.stdout
