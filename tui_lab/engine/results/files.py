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


def make_results_folder(folder: Path) -> None:
    """Before any server starts: a results path that is a file or not writable is bad input."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LabError(f"--results: {folder} is a file, not a folder") from None
    except OSError as exc:
        raise LabError(f"--results: cannot create {folder}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LabError(f"--results: {folder} is not writable")


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
        make_results_folder(folder)
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
        self._open("x", columns=None)
        _sync_dir(folder)

    @classmethod
    def append_to(cls, meta_path: Path) -> ResultsWriter:
        """Reopen an interrupted sweep's files to add rows: a partly written last line is cut
        away first, and a row the crash left in the JSONL only is copied to the CSV, so the two
        files agree again before anything new is appended."""
        meta = read_meta(meta_path)
        writer = cls.__new__(cls)
        writer.stem = meta_path.name.removesuffix(".meta.json")
        writer.meta_path = meta_path
        writer.csv_path = meta_path.with_name(str(meta["csv"]))
        writer.jsonl_path = meta_path.with_name(str(meta["jsonl"]))
        for path in (writer.csv_path, writer.jsonl_path):
            if not path.is_file():
                raise ResultsFileError(f"{path}: missing (named in {meta_path})")
            drop_partial_tail(path)
        header, csv_rows = _csv_records(writer.csv_path, writer.csv_path.read_text("utf-8"))
        jsonl_rows = read_rows(writer.jsonl_path)
        writer._open("a", columns=tuple(header) if header else None)
        if writer.jsonl_path.read_bytes()[-1:] not in (b"", b"\n"):
            writer._jsonl_file.write("\n")  # a complete last row that lacked only its newline
        for row in jsonl_rows[len(csv_rows) :]:
            writer._write_csv(row)
        _sync(writer._jsonl_file)
        _sync(writer._csv_file)
        return writer

    def _open(self, mode: Literal["x", "a"], columns: tuple[str, ...] | None) -> None:
        self._csv_file = self.csv_path.open(mode, encoding="utf-8", newline="")
        self._jsonl_file = self.jsonl_path.open(mode, encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._columns = columns

    def write(self, row: Row) -> None:
        """Append one cell's row to both files and force it to disk before returning."""
        self._write_csv(row)
        self._jsonl_file.write(json.dumps(dict(row), ensure_ascii=False, default=str) + "\n")
        _sync(self._jsonl_file)
        _sync(self._csv_file)

    def _write_csv(self, row: Row) -> None:
        if self._columns is None:
            self._columns = tuple(row)
            self._csv.writerow(self._columns)
        elif set(row) != set(self._columns):
            missing = sorted(set(self._columns) - set(row))
            extra = sorted(set(row) - set(self._columns))
            raise ValueError(
                f"row keys differ from the CSV header: missing {missing}, extra {extra}"
            )
        self._csv.writerow(_csv_cell(row[column]) for column in self._columns)

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


_META_NAMES = ("sweep_name", "csv", "jsonl")


def read_meta(meta_path: Path) -> dict[str, object]:
    """A sweep's <stem>.meta.json, as written by `ResultsWriter`."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ResultsFileError(f"{meta_path}: {error.strerror or error}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ResultsFileError(f"{meta_path}: not a JSON file") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in _META_NAMES):
        raise ResultsFileError(f"{meta_path}: not a sweep's meta file (no csv and jsonl names)")
    return meta


def complete_length(suffix: str, data: bytes) -> int:
    """How many leading bytes of a results file hold whole rows; the rest is the partly written
    last row a crash mid-write leaves behind.

    A JSONL row is whole when its line parses (a row that lacks only its newline is whole). A
    CSV record is whole when its line ending falls outside quotes: the csv module doubles every
    quote inside a field, so an odd count so far means an unfinished quoted field.
    """
    if suffix == ".jsonl":
        body = data.rstrip()
        start = body.rfind(b"\n") + 1
        if not body[start:]:
            return len(data)
        try:
            whole = isinstance(json.loads(body[start:]), dict)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            whole = False
        return len(data) if whole else start
    end = 0
    quoted = False
    for offset, line in _lines_with_offsets(data):
        quoted ^= line.count(b'"') % 2 == 1
        if line.endswith(b"\n") and not quoted:
            end = offset + len(line)
    return end if data[end:].strip() else len(data)


def _lines_with_offsets(data: bytes) -> list[tuple[int, bytes]]:
    offset, out = 0, []
    for line in data.splitlines(keepends=True):
        out.append((offset, line))
        offset += len(line)
    return out


def drop_partial_tail(path: Path) -> bool:
    """Cut a partly written last row off `path` (before appending to it); True when cut."""
    with path.open("r+b") as file:
        data = file.read()
        keep = complete_length(path.suffix, data)
        if keep == len(data):
            return False
        file.truncate(keep)
        os.fsync(file.fileno())
    return True


def read_rows(path: Path) -> list[dict[str, object]]:
    """Rows of a .jsonl or .csv results file, ignoring only the partly written last row a killed
    sweep leaves behind; any other bad line is reported with its path and line number."""
    if path.suffix not in (".jsonl", ".csv"):
        raise ResultsFileError(f"{path}: not a results file (expected .jsonl or .csv)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ResultsFileError(f"{path}: {error.strerror or error}") from None
    try:
        text = data[: complete_length(path.suffix, data)].decode("utf-8")
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}: not a UTF-8 text file") from None
    if path.suffix == ".jsonl":
        return _jsonl_rows(path, text)
    header, records = _csv_records(path, text)
    return [
        {key: _parse_cell(value) for key, value in zip(header, record, strict=True)}
        for record in records
    ]


def _jsonl_rows(path: Path, text: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ResultsFileError(f"{path}:{number}: not a JSON object")
        rows.append(parsed)
    return rows


def _csv_records(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
    """The header and the records of CSV text with whole rows only; a record whose field count
    differs from the header's is reported with the line it starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    records: list[list[str]] = []
    line = 1
    for record in reader:
        if not record:
            pass  # a blank line
        elif not header:
            header = record
        elif len(record) != len(header):
            raise ResultsFileError(
                f"{path}:{line}: {len(record)} fields where the header has {len(header)}"
            )
        else:
            records.append(record)
        line = reader.line_num + 1
    return header, records


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
