"""A real llama-server frozen mid-stream (SIGSTOP): the stream ends as stalled within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tui_lab.engine.processes.ports import free_port_block

pytestmark = pytest.mark.integration


def wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("llama-server did not become healthy")


def test_a_stream_from_a_frozen_server_ends_as_stalled(server_bin: Path, model: Path) -> None:
    port = free_port_block(1)
    server = subprocess.Popen(
        [str(server_bin), "--model", str(model), "--port", str(port), "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        load = subprocess.Popen(
            [
                sys.executable, "-m", "tui_lab.cli", "load", "--url", url, "--stream",
                "--concurrency", "1", "--requests", "1", "--n-predict", "2000",
                "--stall-timeout", "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(3)  # the stream is under way
        os.kill(server.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        out, err = load.communicate(timeout=60)
        assert time.monotonic() - frozen < 15, "the stalled stream waited for its timeout"
        assert load.returncode == 1, err
        assert "stalled:1" in out, out
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(timeout=30)
