"""Shared fixtures: the real llama-server, model and nginx, free ports, and a leftover check.

Integration tests use the same discovery as users do; if set-up did not provide the real
parts, they fail rather than skip, because a lab tested against nothing is untested.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tui_lab.engine.machine.discovery import find_model, find_nginx, find_server
from tui_lab.engine.plan.config import LabConfig
from tui_lab.engine.processes.ports import free_port_block

WATCHED = ("llama-server", "nginx")
# Every process this test session starts inherits this mark: an orphan without it belongs to
# another session running beside this one (two checkouts tested at once), not to this one.
SESSION_MARK = "LLAMALAB_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own run folders and standing-cluster state."""
    home = tmp_path / "lab-home"
    monkeypatch.setenv("LLAMALAB_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def server_bin() -> Path:
    return find_server()


@pytest.fixture(scope="session")
def model() -> Path:
    return find_model()


@pytest.fixture(scope="session")
def nginx_bin() -> Path:
    return find_nginx()


@pytest.fixture
def lab(server_bin: Path, model: Path, nginx_bin: Path, tmp_path: Path) -> LabConfig:
    base = free_port_block(9)
    return LabConfig(
        server_bin=server_bin,
        model=model,
        nginx_bin=nginx_bin,
        base_port=base,
        nginx_port=base + 8,
        results_dir=tmp_path / "results",
        ready_timeout_s=120,
    )


def _ours(info: dict[str, object]) -> bool:
    """A server or nginx, or one of the lab's own processes (an app, a detached sweep, a cluster
    supervisor, a watchdog): each of those may outlive a test only by mistake."""
    if info["name"] in WATCHED:
        return True
    cmdline = " ".join(str(part) for part in info["cmdline"] or ())  # type: ignore[attr-defined]
    return "llamalab" in cmdline or "tui_lab" in cmdline


def _of_this_session(proc: psutil.Process) -> bool:
    try:
        return proc.environ().get(SESSION_MARK) == os.environ[SESSION_MARK]
    except psutil.Error:
        return False


def started_since(t0: float) -> list[psutil.Process]:
    """Watched processes this test started: our descendants, or orphans born during the test
    (a child whose parent died is re-parented to init, which is exactly the leak to catch)."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "create_time", "status", "ppid"]):
        info = proc.info
        if not _ours(info) or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        orphan = info["ppid"] == 1 and info["create_time"] >= t0 - 0.5 and _of_this_session(proc)
        if proc.pid in mine or orphan:
            found.append(proc)
    return found


@pytest.fixture(autouse=True)
def nothing_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test must stop every llama-server and nginx it started; a leftover fails it."""
    t0 = time.time()
    yield
    deadline = time.monotonic() + 5
    left = started_since(t0)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = started_since(t0)
    for proc in left:
        proc.kill()
    assert not left, f"left running: {[(p.pid, p.info['name']) for p in left]}"
