"""Sweep results on disk, written a cell at a time.

A sweep can run for hours and die with the box (OOM killer, a reboot), so every finished cell is
flushed and fsynced before the next one starts: what was measured is never lost.

A write that fails (a full disk, a folder made read-only or removed mid-run) is one line naming
the file, as a `LabError`: the run stops its servers and ends, and the rows before it stay
readable. Each row goes to the JSONL first, the CSV second, so a failure between the two leaves
the JSONL ahead, which is what `append_to` repairs when `sweep resume` goes on.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from tui_lab.engine.errors import LabError
from tui_lab.engine.results.reader import (
    ResultsFileError,
    Row,
    csv_records,
    drop_partial_tail,
    read_meta,
    read_rows,
)


class ResultsWriteError(LabError):
    """Writing a results file failed; the rows already written are intact."""


def _write_failed(path: Path, exc: OSError, jsonl: Path) -> ResultsWriteError:
    reason = exc.strerror or str(exc)
    return ResultsWriteError(
        f"cannot write the results to {path}: {reason}; the rows before are kept, and "
        f"`llamalab sweep resume {jsonl}` goes on from them once that is fixed"
    )


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
        self._failed = False
        try:
            # Mode "x": two sweeps started in the same second must not share (and garble) files.
            with self.meta_path.open("x", encoding="utf-8") as meta_file:
                json.dump(meta, meta_file, indent=2, default=str)
                meta_file.write("\n")
                _sync(meta_file)
            self._open("x", columns=None)
            _sync_dir(folder)
        except OSError as exc:
            raise LabError(f"--results: cannot write to {folder}: {exc.strerror or exc}") from None

    @classmethod
    def append_to(cls, meta_path: Path) -> ResultsWriter:
        """Reopen an interrupted sweep's files to add rows: a partly written last line is cut
        away first, and a row the crash left in the JSONL only is copied to the CSV, so the two
        files agree again before anything new is appended."""
        meta = read_meta(meta_path)
        writer = cls.__new__(cls)
        writer._failed = False
        writer.stem = meta_path.name.removesuffix(".meta.json")
        writer.meta_path = meta_path
        writer.csv_path = meta_path.with_name(str(meta["csv"]))
        writer.jsonl_path = meta_path.with_name(str(meta["jsonl"]))
        for path in (writer.csv_path, writer.jsonl_path):
            if not path.is_file():
                raise ResultsFileError(f"{path}: missing (named in {meta_path})")
            drop_partial_tail(path)
        header, csv_rows = csv_records(writer.csv_path, writer.csv_path.read_text("utf-8"))
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
        self._check_columns(row)
        line = json.dumps(dict(row), ensure_ascii=False, default=str) + "\n"
        path = self.jsonl_path
        try:
            self._jsonl_file.write(line)
            _sync(self._jsonl_file)
            path = self.csv_path
            self._write_csv(row)
            _sync(self._csv_file)
        except OSError as exc:
            self._failed = True
            raise _write_failed(path, exc, self.jsonl_path) from None

    def _check_columns(self, row: Row) -> None:
        if self._columns is not None and set(row) != set(self._columns):
            missing = sorted(set(self._columns) - set(row))
            extra = sorted(set(row) - set(self._columns))
            raise ValueError(
                f"row keys differ from the CSV header: missing {missing}, extra {extra}"
            )

    def _write_csv(self, row: Row) -> None:
        self._check_columns(row)
        if self._columns is None:
            self._columns = tuple(row)
            self._csv.writerow(self._columns)
        self._csv.writerow(_csv_cell(row[column]) for column in self._columns)

    def close(self) -> None:
        """Close both files; a failure to flush is reported unless a write already was."""
        problem: ResultsWriteError | None = None
        for file, path in ((self._jsonl_file, self.jsonl_path), (self._csv_file, self.csv_path)):
            try:
                file.close()
            except OSError as exc:
                problem = problem or _write_failed(path, exc, self.jsonl_path)
        if problem is not None and not self._failed:
            self._failed = True
            raise problem

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
