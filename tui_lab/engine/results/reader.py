"""Sweep results read back: rows for `analyze`, resume and the results screen, and the repair of
the partly written last row a killed sweep leaves behind.

The JSONL file is the faithful copy; the CSV is for spreadsheets and loses the difference between
"12" and 12, which `_parse_cell` undoes as far as it can.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from tui_lab.engine.errors import LabError

Row = Mapping[str, object]

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)


class ResultsFileError(LabError, ValueError):
    """A results file or query that cannot be used, in one line.

    A `LabError` so the CLI shows it like any other user mistake; a `ValueError` because that is
    what it is to library callers.
    """


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
    header, records = csv_records(path, text)
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


def csv_records(path: Path, text: str) -> tuple[list[str], list[list[str]]]:
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
