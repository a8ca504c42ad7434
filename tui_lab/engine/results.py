"""Sweep results on disk: written a cell at a time, read back for `analyze`.

A sweep can run for hours and die with the box (OOM killer, a reboot), so every finished cell is
flushed and fsynced before the next one starts: what was measured is never lost. The JSONL file
is the faithful copy; the CSV is for spreadsheets and loses the difference between "12" and 12.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from tui_lab.engine.errors import LabError

Row = Mapping[str, object]

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


class ResultsFileError(LabError, ValueError):
    """A results file or query that cannot be used, in one line.

    A `LabError` so the CLI shows it like any other user mistake; a `ValueError` because that is
    what it is to library callers.
    """


class ResultsWriter:
    """One sweep's files: <folder>/<stem>.csv (header + rows), <stem>.jsonl (one JSON object per
    row), <stem>.meta.json (config + machine facts)."""

    def __init__(
        self,
        folder: Path,
        sweep_name: str,
        config: Mapping[str, object],
        machine: Mapping[str, object],
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        self.stem = _unique_stem(folder, f"{sweep_name}-{started:%Y%m%dT%H%M%SZ}")
        self.csv_path = folder / f"{self.stem}.csv"
        self.jsonl_path = folder / f"{self.stem}.jsonl"
        self.meta_path = folder / f"{self.stem}.meta.json"
        meta = {
            "sweep_name": sweep_name,
            "started_at": started.isoformat(timespec="seconds"),
            "csv": self.csv_path.name,
            "jsonl": self.jsonl_path.name,
            "config": dict(config),
            "machine": dict(machine),
        }
        # Mode "x": two sweeps started in the same second must not share (and garble) files.
        with self.meta_path.open("x", encoding="utf-8") as meta_file:
            json.dump(meta, meta_file, indent=2, default=str)
            meta_file.write("\n")
            _sync(meta_file)
        self._csv_file = self.csv_path.open("x", encoding="utf-8", newline="")
        self._jsonl_file = self.jsonl_path.open("x", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._columns: tuple[str, ...] | None = None
        _sync_dir(folder)

    def write(self, row: Row) -> None:
        """Append one cell's row to both files and force it to disk before returning."""
        if self._columns is None:
            self._columns = tuple(row)
            self._csv.writerow(self._columns)
        elif set(row) != set(self._columns):
            missing = sorted(set(self._columns) - set(row))
            extra = sorted(set(row) - set(self._columns))
            raise ValueError(
                f"row keys differ from the CSV header: missing {missing}, extra {extra}"
            )
        self._jsonl_file.write(json.dumps(dict(row), ensure_ascii=False, default=str) + "\n")
        self._csv.writerow(_csv_cell(row[column]) for column in self._columns)
        _sync(self._jsonl_file)
        _sync(self._csv_file)

    def close(self) -> None:
        self._csv_file.close()
        self._jsonl_file.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _unique_stem(folder: Path, base: str) -> str:
    stem, number = base, 1
    while any((folder / f"{stem}{suffix}").exists() for suffix in (".csv", ".jsonl", ".meta.json")):
        number += 1
        stem = f"{base}-{number}"
    return stem


def _sync(file: IO[str]) -> None:
    file.flush()
    os.fsync(file.fileno())


def _sync_dir(folder: Path) -> None:
    """New files are only durable once their directory entry is, too."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _csv_cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def read_rows(path: Path) -> list[dict[str, object]]:
    """Rows of a .jsonl or .csv results file, tolerating the half-written last line a killed
    sweep leaves behind."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ResultsFileError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}: not a UTF-8 text file") from None
    if path.suffix == ".jsonl":
        return _jsonl_rows(path, text)
    if path.suffix == ".csv":
        return _csv_rows(text)
    raise ResultsFileError(f"{path}: not a results file (expected .jsonl or .csv)")


def _jsonl_rows(path: Path, text: str) -> list[dict[str, object]]:
    numbered = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
    rows: list[dict[str, object]] = []
    for position, (number, line) in enumerate(numbered, 1):
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            rows.append(parsed)
        elif position < len(numbered):
            raise ResultsFileError(f"{path}:{number}: not a JSON object")
        # else: the last line was cut short by a crash mid-write; the cell is simply not there.
    return rows


def _csv_rows(text: str) -> list[dict[str, object]]:
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # drop a row cut short by a crash mid-write
    return [
        {key: _parse_cell(value) for key, value in record.items()}
        for record in csv.DictReader(io.StringIO(text))
    ]


def _parse_cell(value: str | None) -> object:
    """Undo what CSV did to the row: numbers, None and nested JSON come back as such.

    A text value that merely looks like a number ("007") comes back as a number too; read the
    JSONL file when that matters.
    """
    if not value:
        return None
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    if value[0] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_fields(rows: Sequence[Row]) -> list[str]:
    """Fields worth ranking by: those holding a number in at least one row, in first-seen order."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update((key, None) for key, value in row.items() if _is_number(value))
    return list(fields)


def top_cells(
    rows: Sequence[Row], field: str, order: Literal["asc", "desc"], count: int
) -> list[dict[str, object]]:
    """The `count` best cells by `field`; ties keep sweep order.

    Rows whose `field` is missing, None, non-numeric or NaN are left out rather than sorted last:
    a failed cell is not the 10th-fastest layout, and listing it among the best would say so.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more, not {count}")
    if not rows:
        return []
    available = numeric_fields(rows)
    if field not in available:
        raise ResultsFileError(
            f"cannot rank by {field!r}: not a numeric field of these rows "
            f"(numeric fields: {', '.join(available) or 'none'})"
        )
    keyed = [(value, row) for row in rows if (value := _rank_value(row.get(field))) is not None]
    keyed.sort(key=lambda pair: pair[0], reverse=order == "desc")
    return [dict(row) for _, row in keyed[:count]]


def _rank_value(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        return value
    return None


def format_table(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """A plain text table for a terminal: numbers right-aligned so their magnitudes line up."""
    cells = [[_table_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [
        all(_is_number(row.get(column)) or row.get(column) is None for row in rows)
        for column in columns
    ]
    widths = [
        max([len(column), *(len(line[index]) for line in cells)])
        for index, column in enumerate(columns)
    ]

    def render(values: Sequence[str]) -> str:
        padded = (
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    lines = [render(columns), render(["-" * width for width in widths])]
    lines.extend(render(line) for line in cells)
    return "\n".join(lines)


def _table_cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        # Two decimals where they carry information (0.47 s), one where they are noise (1234.5 t/s).
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)
