"""Server-side dimensions and placement on the real binaries: two model files x `-fa on|off`,
each instance pinned to its own core with the threads split, one row per combination."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.processes.placement import machine_topology
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration


def second_model_file(model: Path, folder: Path) -> Path:
    """The same weights under another file name: a second model file costs no download, and a
    hard link no copy (a symbolic link would resolve to the same file and be refused)."""
    twin = folder / "twin-of-default.gguf"
    try:
        os.link(model, twin)
    except OSError:
        shutil.copyfile(model, twin)
    return twin


@pytest.mark.skipif(len(machine_topology().cores) < 2, reason="pinning 2 instances needs 2 cores")
def test_sweep_over_two_models_and_flash_attention_writes_a_row_per_combination(
    lab: LabConfig, tmp_path: Path
) -> None:
    twin = second_model_file(lab.model, tmp_path)
    results = tmp_path / "res"
    out = llamalab(
        "sweep", "full", "--instances", "2", "--parallel", "1", "--concurrency", "2",
        "--n-predict", "8", "--requests", "2", "--placement", "pinned",
        "--model", str(lab.model), "--model", str(twin), "--server-dim", "-fa on|-fa off",
        "--results", str(results), *ports(lab),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = read_rows(next(results.glob("sweep-full-*.jsonl")))
    assert [(Path(str(r["model"])).name, r["server_flags"]) for r in rows] == [
        (lab.model.name, "-fa on"),
        (lab.model.name, "-fa off"),
        (twin.name, "-fa on"),
        (twin.name, "-fa off"),
    ]
    cores = machine_topology().cores
    expected_cpus = ";".join(",".join(map(str, core.cpus)) for core in cores[:2])
    for row in rows:
        assert row["error"] is None
        assert row["output_tokens"] == row["server_output_tokens"] == 16
        assert (row["placement"], row["threads"]) == ("pinned", "auto")
        assert row["instance_cpus"] == expected_cpus
        assert row["instance_threads"] == "1;1"
    # What the servers themselves were told: one compute thread each, the flag as chosen.
    logs = [
        p.read_text(errors="replace")
        for p in Path(os.environ["LLAMALAB_HOME"]).rglob("llama-server-*.log")
    ]
    assert logs and all("n_threads = 1" in log for log in logs)


def test_the_adaptive_sweep_ladders_each_server_flag_alternative(
    lab: LabConfig, tmp_path: Path
) -> None:
    results = tmp_path / "res"
    out = llamalab(
        "sweep", "adaptive", "--instances", "1", "--parallel", "2", "--concurrency", "1,2",
        "--n-predict", "8", "--finalists", "1", "--server-dim", "-fa on|-fa off",
        "--results", str(results), *ports(lab),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = read_rows(next(results.glob("sweep-adaptive-*.jsonl")))
    probed = {r["server_flags"] for r in rows if r["phase"] == "probe"}
    assert probed == {"-fa on", "-fa off"}
    (full,) = [r for r in rows if r["phase"] == "full"]
    assert full["server_flags"] in probed and full["error"] is None
    assert f"best: 1x2 c={full['concurrency']} " in out.stdout
