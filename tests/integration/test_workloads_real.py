"""Workloads against the real llama-server: lengths in its own tokens, conversations that grow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.load.client import LoadSpec, run_load
from tui_lab.engine.load.server_tokens import filler
from tui_lab.engine.load.workloads import Length, WorkloadSettings, build
from tui_lab.engine.plan.config import LabConfig, Layout, server_argv
from tui_lab.engine.processes.instance import ServerInstance, control_session
from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration


def test_multi_turn_cell_through_the_cli(lab: LabConfig, tmp_path: Path) -> None:
    results = tmp_path / "res"
    out = llamalab(
        "test", "concurrent", "--workload", "multi-turn", "--sessions", "2", "--turns", "2",
        "--system-tokens", "64", "--prompt-tokens", "16", "--parallel", "2",
        "--concurrency", "2", "--n-predict", "8", "--threads", "1",
        "--results", str(results), *ports(lab),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = read_rows(next(results.glob("test-concurrent-*.jsonl")))
    assert row["workload"] == "multi-turn" and row["requests"] == 4 and not row["error"]
    assert row["output_tokens"] == row["server_output_tokens"] == 4 * 8
    # Turn 1: the system prompt and a message; turn 2 also the first reply and a new message.
    assert row["prompt_tokens"] >= 2 * (64 + 16) + 2 * (64 + 16 + 8 + 16)
    meta = json.loads(next(results.glob("test-concurrent-*.meta.json")).read_text())
    assert "multi-turn" in json.dumps(meta)


def test_a_multi_turn_full_sweep_writes_a_row_per_balance(lab: LabConfig, tmp_path: Path) -> None:
    results = tmp_path / "res"
    out = llamalab(
        "sweep", "full", "--workload", "multi-turn", "--instances", "2", "--parallel", "2",
        "--concurrency", "4", "--balance", "round_robin,session", "--sessions", "2",
        "--turns", "2", "--system-tokens", "32", "--prompt-tokens", "8", "--n-predict", "8",
        "--threads", "1", "--results", str(results), *ports(lab),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = read_rows(next(results.glob("sweep-full-*.jsonl")))
    assert [(r["balance"], r["workload"]) for r in rows] == [
        ("round_robin", "multi-turn"),
        ("session", "multi-turn"),
    ]
    for row in rows:
        assert not row["error"] and row["requests_ok"] == 4, row
        assert row["output_tokens"] == row["server_output_tokens"] == 4 * 8
        assert row["cache_hit_rate"] is not None
        assert len(row["instance_output_tokens"].split(";")) == 2


async def test_lengths_are_the_servers_tokens_and_turns_grow(
    server_bin: Path, model: Path, tmp_path: Path
) -> None:
    port = free_port_block(1)
    layout = Layout(instances=1, parallel=2, ctx_size=2 * 2560, threads=1)
    argv = server_argv(server_bin, model, "127.0.0.1", port, layout)
    inst = ServerInstance(0, "127.0.0.1", port, argv, tmp_path / "s.log", lambda _: None)
    synthetic = WorkloadSettings("synthetic", Length(2000, 2000), Length(4, 4), seed=3)
    chat = WorkloadSettings(
        "multi-turn", Length(30, 30), Length(8, 8), sessions=2, turns=3, system_tokens=100
    )
    try:
        await inst.start()
        async with control_session() as session:
            await inst.wait_ready(session, 120)
            pieces = await filler(session, inst.url, synthetic.filler_tokens(), 3, None)
        asked = build(synthetic, pieces, 3, 4)
        long = await run_load(LoadSpec(inst.url, 2, 3, 4, script=asked))
        turns = await run_load(
            LoadSpec(inst.url, 2, 6, 8, api="chat", script=build(chat, pieces, 6, 8))
        )
    finally:
        await inst.stop()
    assert all(r.ok for r in long.records + turns.records)
    assert all(abs(r.prompt_tokens - 2000) <= 20 for r in long.records), long.records
    counted = [r.prompt_tokens for r in turns.records]  # two sessions of three turns, in order
    for session in (counted[:3], counted[3:]):
        assert session[0] > 100 and session[0] < session[1] < session[2]
        assert session[1] - session[0] >= 30 + 8
