"""Interrupted sweeps resume, detached sweeps outlive their terminal: real `llamalab` processes,
real llama-server, nginx and HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.reader import read_rows
from tui_lab.engine.sweeps import detached

pytestmark = pytest.mark.integration

SWEEP = (
    "sweep",
    "full",
    "--instances",
    "1",
    "--parallel",
    "1,2",
    "--concurrency",
    "1,2",
    "--n-predict",
    "8",
    "--requests",
    "4",
    "--threads",
    "1",
)
CELLS = 4


def sweep_args(lab: LabConfig, results: Path) -> list[str]:
    return [*SWEEP, *ports(lab), "--results", str(results)]


# Ctrl-C as a terminal delivers it, whoever started the suite: a shell's background job (and
# so a suite run with `&`, and every process it starts) inherits SIGINT ignored, and Python
# then installs no KeyboardInterrupt handler, so the sweep would never see the signal.
WITH_CTRL_C = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'llamalab'; runpy.run_module('tui_lab.cli', run_name='__main__')"
)


def start_sweep(lab: LabConfig, results: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WITH_CTRL_C, *sweep_args(lab, results)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(jsonl_dir: Path, count: int, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in jsonl_dir.glob("*.jsonl"):
            if path.read_text().count("\n") >= count:
                return path
        time.sleep(0.1)
    raise AssertionError(f"no {count} rows in {jsonl_dir} after {timeout} s")


def cells_and_params(rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    """Each cell's coordinates; fails when a cell appears twice."""
    keys = ("instances", "parallel", "concurrency", "n_predict", "requests", "threads_http")
    by_cell = {row["cell"]: {k: row[k] for k in keys} for row in rows}
    assert len(by_cell) == len(rows), f"a cell appears twice: {[r['cell'] for r in rows]}"
    return by_cell


def assert_measured(rows: list[dict[str, object]]) -> None:
    for row in rows:
        assert row["error"] is None
        assert row["output_tokens"] == row["server_output_tokens"] == 8 * 4
        assert isinstance(row["output_tok_per_s"], float) and row["output_tok_per_s"] > 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_sweep_resumes_to_the_same_cells_as_an_uninterrupted_one(
    lab: LabConfig, tmp_path: Path, sig: signal.Signals
) -> None:
    whole = llamalab(*sweep_args(lab, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    (whole_jsonl,) = (tmp_path / "whole").glob("*.jsonl")
    expected = cells_and_params(read_rows(whole_jsonl))
    assert sorted(expected) == list(range(1, CELLS + 1))

    cut = tmp_path / "cut"
    proc = start_sweep(lab, cut)
    jsonl = wait_for_rows(cut, 1)
    servers = psutil.Process(proc.pid).children()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    psutil.wait_procs(servers, timeout=20)  # a killed sweep's servers go with it (PDEATHSIG)
    kept = read_rows(jsonl)
    assert 1 <= len(kept) < CELLS
    csv = jsonl.with_suffix(".csv")
    # What a crash in the middle of writing the next row leaves behind.
    with jsonl.open("a") as f:
        f.write('{"run": "sweep-full", "cell": 9, "instan')
    with csv.open("a") as f:
        f.write("sweep-full,9,1,")
    assert read_rows(jsonl) == kept and len(read_rows(csv)) == len(kept)

    resumed = llamalab("sweep", "resume", str(csv))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(kept)} of {CELLS} cells have a row" in resumed.stderr
    rows = read_rows(jsonl)
    assert rows[: len(kept)] == kept
    assert cells_and_params(rows) == expected
    assert_measured(rows)
    assert [r["cell"] for r in read_rows(csv)] == [r["cell"] for r in rows]
    assert csv.read_text().count("instances") == 1  # one header
    again = llamalab("sweep", "resume", str(jsonl))
    assert again.returncode == 0 and "nothing to resume" in again.stdout


def test_resume_refuses_files_of_another_plan(lab: LabConfig, tmp_path: Path) -> None:
    proc = start_sweep(lab, tmp_path)
    jsonl = wait_for_rows(tmp_path, 1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    row = json.loads(jsonl.read_text().splitlines()[0])
    row["parallel"] = 64
    jsonl.write_text(json.dumps(row) + "\n")
    out = llamalab("sweep", "resume", str(jsonl))
    assert out.returncode == 2
    assert "(cell 1) has parallel=64 where the sweep's plan has 1" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    flags = llamalab("sweep", "resume", str(jsonl), "--n-predict", "32")
    assert flags.returncode == 2 and "--n-predict does not apply" in flags.stderr


def test_a_detached_sweep_returns_at_once_and_attach_follows_it_to_the_end(
    lab: LabConfig, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    started = llamalab(*sweep_args(lab, tmp_path), "--detach")
    took = time.monotonic() - t0
    assert started.returncode == 0, started.stderr
    assert took < 15, f"--detach took {took:.1f} s"
    assert "runs detached" in started.stdout
    state = detached.running()
    assert state is not None and psutil.pid_exists(state.pid)
    assert psutil.Process(state.pid).terminal() is None  # no terminal to lose
    attached = llamalab("sweep", "attach")
    assert attached.returncode == 0, attached.stderr
    assert f"cell {CELLS}/{CELLS} done" in attached.stderr
    rows = read_rows(state.jsonl)
    assert sorted(r["cell"] for r in rows) == list(range(1, CELLS + 1))
    assert_measured(rows)
    psutil.wait_procs([psutil.Process(state.pid)], timeout=10)
    assert not detached.alive(state)
    # Attaching after the end replays it: how a dropped session learns what happened.
    replay = llamalab("sweep", "attach")
    assert replay.returncode == 0 and f"cell {CELLS}/{CELLS} done" in replay.stderr


def test_stop_ends_a_detached_sweep_and_everything_it_started(
    lab: LabConfig, tmp_path: Path
) -> None:
    started = llamalab(*sweep_args(lab, tmp_path), "--detach")
    assert started.returncode == 0, started.stderr
    state = detached.running()
    assert state is not None
    wait_for_rows(tmp_path, 1)
    sweep = psutil.Process(state.pid)
    servers = sweep.children(recursive=True)
    assert any(p.name() == "llama-server" for p in servers)
    stopped = llamalab("sweep", "stop")
    assert stopped.returncode == 0 and "stopped sweep-full" in stopped.stdout
    _, alive = psutil.wait_procs([sweep, *servers], timeout=10)
    assert not alive
    rows = read_rows(state.jsonl)
    assert 1 <= len(rows) < CELLS
    events = state.events.read_text().splitlines()
    assert json.loads(events[-1]) | {"cells_ok": None} == {
        "type": "RunFinished",
        "run": "sweep-full",
        "cells_ok": None,
        "cells_failed": 0,
        "results_csv": str(state.csv),
        "cancelled": True,
    }
    assert "no detached sweep running" in llamalab("sweep", "stop").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "full", "--retry-failed"], "--retry-failed is for sweep resume"),
        (["sweep", "full", "x.jsonl"], "unexpected argument 'x.jsonl'"),
        (["sweep", "attach", "--detach"], "--detach does not apply"),
        (["sweep", "stop", "--parallel", "3"], "--parallel does not apply"),
        (["sweep", "resume"], "give the interrupted sweep's .jsonl or .csv"),
        (["sweep", "resume", "notes.txt"], "not a results file"),
        (["sweep", "resume", "gone.jsonl"], "results file not found: gone.jsonl"),
    ],
)
def test_sweep_control_mistakes_get_one_line(args: list[str], message: str) -> None:
    out = llamalab(*args)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_attach_and_stop_with_no_detached_sweep() -> None:
    attached = llamalab("sweep", "attach")
    assert attached.returncode == 1 and "no detached sweep" in attached.stdout
    stopped = llamalab("sweep", "stop")
    assert stopped.returncode == 0 and "no detached sweep running" in stopped.stdout
