"""The headless `llamalab` as a user runs it: a real process, real servers, real nginx."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from tests.helpers import llamalab, ports
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.results.reader import read_rows

pytestmark = pytest.mark.integration


def test_cli_full_sweep_writes_results_with_real_figures(lab: LabConfig, tmp_path: Path) -> None:
    results = tmp_path / "res"
    out = llamalab(
        "sweep",
        "full",
        "--instances",
        "1,2",
        "--parallel",
        "1,2",
        "--concurrency",
        "1,4",
        "--n-predict",
        "8",
        "--threads",
        "1",
        "--results",
        str(results),
        *ports(lab),
    )
    assert out.returncode == 0, out.stderr
    (jsonl,) = results.glob("sweep-full-*.jsonl")
    rows = read_rows(jsonl)
    assert len(rows) == 8
    assert all(r["output_tokens"] == r["server_output_tokens"] and r["output_tokens"] for r in rows)
    meta = json.loads(next(results.glob("sweep-full-*.meta.json")).read_text())
    assert meta["machine"]["model_size_bytes"] > 100_000_000
    assert "cell 8/8 done" in out.stderr
    analyzed = llamalab("analyze", str(jsonl), "--field", "output_tok_per_s", "--count", "3")
    assert analyzed.returncode == 0
    lines = analyzed.stdout.strip().splitlines()
    assert len(lines) == 2 + 3 + 1  # header, rule, three best cells, the recommendation
    assert " best " in lines[2] and lines[-1].startswith("recommended: ")


def busy_status(endpoint: str) -> dict[str, Any]:
    """`cluster status --json` while a long load runs through nginx, so slots are busy."""
    flags = ["--url", endpoint, "--concurrency", "4", "--requests", "4", "--n-predict", "400"]
    load = subprocess.Popen(
        [sys.executable, "-m", "tui_lab.cli", "load", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # the load client's start-up, so the requests are in flight
        return json.loads(llamalab("cluster", "status", "--json").stdout)
    finally:
        assert load.wait(timeout=300) == 0


def test_standing_cluster_serves_an_openai_client_streaming_included(lab: LabConfig) -> None:
    started = llamalab(
        "cluster", "start", "--instances", "2", "--parallel", "2", "--threads", "1", *ports(lab)
    )
    try:
        assert started.returncode == 0, started.stderr
        endpoint = f"http://127.0.0.1:{lab.nginx_port}"
        assert endpoint in started.stdout

        again = llamalab("cluster", "start", *ports(lab))
        assert again.returncode == 2 and "already running" in again.stderr

        status = json.loads(llamalab("cluster", "status", "--json").stdout)
        assert status["endpoint"] == endpoint
        assert status["nginx"]["state"] == "ready"
        assert [i["state"] for i in status["instances"]] == ["ready", "ready"]
        assert all(i["pid"] and i["port"] for i in status["instances"])
        for idle in status["instances"]:  # measured over ~1 s with no request running
            assert idle["cpu_percent"] >= 0 and idle["rss_bytes"] > 100_000_000
            assert (idle["slots_busy"], idle["slots_total"], idle["tokens_per_s"]) == (0, 2, 0.0)
            assert isinstance(idle["gpu_memory_bytes"], int) or idle["gpu_reason"]
        busy = busy_status(endpoint)
        assert sum(i["slots_busy"] for i in busy["instances"]) >= 1
        assert sum(i["tokens_per_s"] or 0 for i in busy["instances"]) > 0
        assert any(i["cpu_percent"] > 10 for i in busy["instances"])

        client = openai.OpenAI(base_url=f"{endpoint}/v1", api_key="none")
        reply = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": "Count"}], max_tokens=8, stream=True
        )
        pieces = [
            c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
        ]
        assert len(pieces) >= 2

        load = llamalab(
            "load",
            "--url",
            endpoint,
            "--concurrency",
            "4",
            "--requests",
            "8",
            "--n-predict",
            "8",
            "--stream",
            "--json",
        )
        assert load.returncode == 0, load.stderr
        figures = json.loads(load.stdout)
        assert figures["requests_ok"] == 8 and figures["output_tokens"] == 64
        for key in ("wall_s", "output_tok_per_s", "requests_per_s", "requests_failed"):
            assert key in figures
        assert (
            figures["ttft_ms"]["p50"] > 0 and figures["e2el_ms"]["p99"] >= figures["e2el_ms"]["p50"]
        )
    finally:
        stopped = llamalab("cluster", "stop")
    assert stopped.returncode == 0 and "cluster stopped" in stopped.stdout
    assert "no cluster running" in llamalab("cluster", "status").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["test", "single", "--model", "/nope/missing.gguf"],
            "model not found: /nope/missing.gguf",
        ),
        (["sweep", "full", "--parallel", "1,,x"], "--parallel: empty item"),
        (["sweep", "full", "--concurrency", "0"], "--concurrency: 0 is below 1"),
        (["sweep", "full", "--instances", "-4"], "--instances: -4 is below 1"),
        (["sweep", "full", "--instances", ""], "--instances: empty list"),
        (["test", "concurrent", "--concurrency", "0"], "--concurrency: 0 is below 1"),
        (["test", "single", "--requests", "0"], "--requests: 0 is below 1"),
        (["sweep", "nonsense"], "invalid choice: 'nonsense'"),
        (["test", "single", "--server-bin", "/nope/llama-server"], "llama-server not found"),
        (["test", "round-robin", "--nginx-bin", "/nope/nginx"], "nginx not found"),
        (["test", "single", "--host", "my box"], "not an IP address"),
        (["test", "single", "--base-port", "70000"], "not a TCP port"),
    ],
)
def test_bad_input_gets_one_line_and_starts_nothing(args: list[str], message: str) -> None:
    out = llamalab(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_a_model_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    out = llamalab("test", "single", "--model", str(fake))
    assert out.returncode == 2 and "not a GGUF file" in out.stderr


def test_a_port_in_use_is_reported_before_anything_starts(lab: LabConfig, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", lab.base_port + 1))
        taken.listen()
        out = llamalab(
            "test", "round-robin", "--instances", "2", *ports(lab), "--results", str(tmp_path)
        )
    assert out.returncode == 2
    assert f"port {lab.base_port + 1} (llama-server #1) is already in use" in out.stderr
    assert not list(tmp_path.glob("*.csv"))  # nothing recorded, nothing started


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_dropped_terminal_stops_the_run_and_its_servers(lab: LabConfig, sig: int) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tui_lab.cli",
            "test",
            "round-robin",
            "--instances",
            "2",
            "--parallel",
            "1",
            "--concurrency",
            "2",
            "--requests",
            "400",
            "--n-predict",
            "32",
            "--threads",
            "1",
            *ports(lab),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    servers: list[psutil.Process] = []
    while sorted(c.name() for c in servers) != ["llama-server", "llama-server", "nginx"]:
        assert time.monotonic() < deadline, "servers did not start"
        time.sleep(0.2)
        servers = psutil.Process(proc.pid).children()
    time.sleep(1.0)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    assert proc.stderr is not None and "servers are stopped" in proc.stderr.read()
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive
