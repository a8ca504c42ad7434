"""A results disk that fills up mid-sweep: one line, servers stopped, rows kept, resume goes on.

The disk is a small tmpfs of the test's own, which takes root; elsewhere the test is skipped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration
CELLS = 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the results takes root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * 4096)
    return filler


def test_a_full_results_disk_stops_the_sweep_with_one_line_and_resume_goes_on(
    lab: LabConfig, small_disk: Path
) -> None:
    results = small_disk / "results"
    concurrency = ",".join(str(c) for c in range(1, CELLS + 1))
    sweep = subprocess.Popen(
        [
            sys.executable, "-m", "tui_lab.cli", "sweep", "full",
            "--instances", "1", "--parallel", "1", "--threads", "1",
            "--concurrency", concurrency, "--n-predict", "8", "--requests", "24",
            "--results", str(results), *ports(lab),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not any(read_rows(p) for p in results.glob("*.jsonl")):
            assert sweep.poll() is None, sweep.communicate()
            assert time.monotonic() < deadline, "no first row"
            time.sleep(0.2)
        filler = fill(small_disk)  # the first cell's row is on disk: now the disk is full
        _, stderr = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    (jsonl,) = results.glob("*.jsonl")
    assert any(
        "cannot write the results to" in line and "No space left on device" in line
        for line in lines
    ), stderr
    assert "Traceback" not in stderr
    kept = read_rows(jsonl)
    assert 1 <= len(kept) < CELLS and all(r["requests_ok"] == 24 for r in kept)

    filler.unlink()  # room again: the sweep goes on from the rows it kept
    resumed = llamalab("sweep", "resume", str(jsonl))  # on the ports it recorded
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(jsonl)
    assert [r["concurrency"] for r in rows] == list(range(1, CELLS + 1))
    assert rows[: len(kept)] == kept
