"""The engine's front door without servers: the same mistakes, the same answers, from both faces,
and the state files of the standing cluster and of a detached run read back as they were
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui_lab.cli import main as cli
from tui_lab.engine import lab
from tui_lab.engine.errors import LabError
from tui_lab.engine.events import ProcessState
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.processes import standing_cluster
from tui_lab.engine.processes.standing_cluster import ClusterProcess, ClusterState
from tui_lab.engine.results.writer import ResultsWriter
from tui_lab.engine.settings.run_settings import RunSettings, build_plan, lab_config
from tui_lab.engine.sweeps import detached
from tui_lab.engine.sweeps.detached import DetachedRun
from tui_lab.engine.sweeps.resume import recorded_config
from tui_lab.engine.sweeps.runner import cell_row

SWEEP = RunSettings(
    kind="sweep-full",
    instances="1",
    parallel="1,2",
    concurrency="1",
    n_predict="8",
    requests="4",
    model="/m/model.gguf",
    server_bin="/no/such/llama-server",
)


async def test_prepare_fails_with_the_line_the_settings_give(tmp_path: Path) -> None:
    settings = SWEEP.with_values(results=str(tmp_path / "results"))
    with pytest.raises(LabError) as direct:
        lab_config(settings, need_nginx=False)
    with pytest.raises(LabError) as prepared:
        await lab.prepare(settings)
    assert str(prepared.value) == str(direct.value)
    assert str(prepared.value) == "model not found: /m/model.gguf"
    assert not (tmp_path / "results").exists()  # nothing written before the check


def finished_sweep(tmp_path: Path) -> ResultsWriter:
    """A sweep's files with a row for every cell, written by a lab found at made-up paths."""
    plan = build_plan(SWEEP)
    found = LabConfig(Path("/no/such/llama-server"), Path("/m/model.gguf"), nginx_bin=None)
    config = recorded_config(SWEEP, plan, found)
    with ResultsWriter(tmp_path, plan.run, config, {}) as writer:
        for index, cell in enumerate(plan.cells, 1):
            writer.write(cell_row(plan, index, cell, None, None, None))
    return writer


async def test_resuming_a_finished_sweep_says_nothing_to_resume_before_any_check(
    tmp_path: Path,
) -> None:
    writer = finished_sweep(tmp_path)
    with pytest.raises(lab.NothingToResume) as caught:
        await lab.prepare_resume(writer.jsonl_path)  # the binary is gone: not looked for yet
    assert caught.value.cells == 2


def test_cli_resume_of_a_finished_sweep_prints_nothing_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = finished_sweep(tmp_path)
    assert cli.main(["sweep", "resume", str(writer.csv_path)]) == 0
    out = capsys.readouterr().out
    assert out == f"nothing to resume: all 2 cells of {writer.csv_path} have a row\n"


async def test_measure_load_refuses_what_is_not_a_url() -> None:
    with pytest.raises(LabError, match=r"^--url: 'ftp://x' is not an http:// or https:// URL$"):
        await lab.measure_load("ftp://x", RunSettings(concurrency="2"))


async def test_a_cluster_takes_one_balancing_method() -> None:
    with pytest.raises(LabError, match="--balance: this run takes one value"):
        await lab.prepare_cluster(
            RunSettings(instances="1", parallel="1", balance="round_robin,least_conn")
        )


async def test_stopping_with_no_detached_run_stops_nothing() -> None:
    assert await lab.stop_detached() is None
    assert await lab.latest_detached() is None


def cluster_state() -> ClusterState:
    return ClusterState(
        supervisor_pid=4242,
        supervisor_started=1700000000.5,
        status="ready",
        endpoint="http://127.0.0.1:8000",
        host="127.0.0.1",
        api_key="secret",
        model="/m/model.gguf",
        instances_requested=2,
        parallel=4,
        balance="round_robin",
        nginx=ClusterProcess(0, 8000, 11, "ready"),
        instances=(
            ClusterProcess(0, 8001, 12, "ready", log=Path("/logs/server-0.log")),
            ClusterProcess(1, 8002, None, "http_500", detail="gone"),
        ),
    )


def test_the_cluster_state_file_reads_back_as_written() -> None:
    state = cluster_state()
    standing_cluster.write_state(state)
    on_disk = json.loads(standing_cluster.state_path().read_text())
    assert on_disk["api_key"] == "secret" and on_disk["endpoint"] == "http://127.0.0.1:8000"
    assert on_disk["instances"][0] == {
        "index": 0,
        "port": 8001,
        "pid": 12,
        "state": "ready",
        "exit_code": None,
        "log": "/logs/server-0.log",
        "detail": "",
        "started": None,
    }
    assert standing_cluster.read_state() == state
    assert state.ready == 1


def test_an_older_state_file_with_bare_entries_still_reads() -> None:
    """What the supervisor writes before its processes have started: no log, no detail."""
    data = cluster_state().to_json()
    data["nginx"] = {"port": 8000, "pid": None, "state": "stopped"}
    data["instances"] = [{"index": 0, "port": 8001, "pid": None, "state": "stopped"}]
    standing_cluster.state_path().write_text(json.dumps(data))
    state = standing_cluster.read_state()
    assert state is not None and state.instances == (ClusterProcess(0, 8001),)


def test_a_broken_cluster_state_file_is_one_line() -> None:
    standing_cluster.state_path().write_text('{"endpoint": "x"}')
    with pytest.raises(LabError, match=r"cluster state file unreadable: .*state\.json"):
        standing_cluster.read_state()


def test_cluster_status_json_hides_the_api_key() -> None:
    shown = json.loads(standing_cluster.status_json(cluster_state()))
    assert "api_key" not in shown and shown["instances"][1]["state"] == "http_500"
    assert json.loads(standing_cluster.status_json(None)) == {
        "endpoint": None,
        "nginx": None,
        "instances": [],
    }


def test_the_cluster_shows_as_the_process_events_a_run_emits() -> None:
    events = cluster_state().process_states()
    assert [(e.role, e.index, e.state) for e in events] == [
        ("nginx", 0, "ready"),
        ("server", 0, "ready"),
        ("server", 1, "not answering"),
    ]
    assert events[1].log_path == Path("/logs/server-0.log") and events[2].detail == "gone"
    assert cluster_state().process_states(stopped=True)[1] == ProcessState(
        "server", 0, 8001, 12, "stopped", owner="cluster"
    )


def test_a_detached_run_state_file_reads_back_and_junk_is_skipped(lab_home: Path) -> None:
    run_dir = lab_home / "runs" / "x-detached"
    run_dir.mkdir(parents=True)
    state = DetachedRun(
        pid=1,
        pid_started=12.5,
        run="sweep-full",
        started_at="2024-01-01T00:00:00+00:00",
        run_dir=run_dir,
        events=run_dir / detached.EVENTS_FILE,
        log=run_dir / detached.LOG_FILE,
        meta=Path("/r/s.meta.json"),
        jsonl=Path("/r/s.jsonl"),
        csv=Path("/r/s.csv"),
    )
    (run_dir / detached.STATE_FILE).write_text(json.dumps(state.to_json()))
    assert json.loads((run_dir / detached.STATE_FILE).read_text())["csv"] == "/r/s.csv"
    junk = lab_home / "runs" / "y-detached"
    junk.mkdir()
    (junk / detached.STATE_FILE).write_text('{"pid": 7}')
    assert detached.states() == [state]
    assert DetachedRun.from_json(["not", "a", "state"]) is None
