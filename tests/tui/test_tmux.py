"""The installed `llamalab-tui` in a real terminal: tmux types the keys and reads the screen."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tui_lab.engine.processes.ports import free_port_block
from tui_lab.engine.settings.presets import save_last
from tui_lab.engine.settings.run_settings import RunSettings

pytestmark = pytest.mark.integration
TUI = Path(sys.executable).parent / "llamalab-tui"
# A tmux server of the tests' own: a pane takes its environment from the server, so in the
# tester's own running tmux server the app would read the tester's settings, not the test's.
SOCKET = f"tui-tests-{os.getpid()}"
TMUX = ("tmux", "-L", SOCKET)


def tmux(*args: str) -> str:
    return subprocess.run(
        [*TMUX, *args], capture_output=True, text=True, check=False, timeout=10
    ).stdout


@pytest.fixture(scope="module", autouse=True)
def private_tmux_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests run beside a tmux server on the default socket, as they do for anyone who
    works inside tmux: a decoy one whose environment points at other settings (64-token
    sweeps), unless the tester's own is already there. The tests must not meet it."""
    decoy = None
    if subprocess.run(["tmux", "has-session"], capture_output=True, check=False).returncode:
        decoy = tmp_path_factory.mktemp("decoy")
        (decoy / "last.toml").write_text('n_predict = "64"\n')
        env = {**os.environ, "LLAMALAB_CONFIG": str(decoy), "LLAMALAB_HOME": str(decoy)}
        subprocess.run(["tmux", "new-session", "-d", "-s", "decoy"], env=env, check=True)
    # One server for the whole module: one that exits with its last session can take the next
    # test's new session down with it.
    tmux("start-server", ";", "set-option", "-s", "exit-empty", "off")
    yield
    tmux("kill-server")
    if decoy is not None:
        subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_screen(session: str, text: str, timeout: float = 30, *, gone: bool = False) -> str:
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        shown = screen(session)
        if (text in shown) != gone:
            return shown
        time.sleep(0.3)
    raise AssertionError(f"{text!r} {'still' if gone else 'not'} on screen:\n{shown}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by ./lab test")
def test_installed_tui_runs_in_a_real_terminal_at_80x24(tmp_path: Path) -> None:
    session = f"llamalab-{uuid.uuid4().hex[:8]}"
    _tmux_tui(session, tmp_path, size=(80, 24))
    try:
        shown = wait_screen(session, "Configure")
        assert "cluster: off" in shown and "Process" in shown
        tmux("send-keys", "-t", session, "?")
        wait_screen(session, "start / stop the round-robin cluster")
        tmux("send-keys", "-t", session, "Escape")
        # A key sent right after Escape would arrive as alt+key: wait for the help to close.
        wait_screen(session, "start / stop the round-robin cluster", gone=True)
        tmux("send-keys", "-t", session, "c")
        wait_screen(session, "measured requests")
        wait_screen(session, "esc Back")
        tmux("send-keys", "-t", session, "Escape")
        wait_screen(session, "esc Back", gone=True)
        tmux("send-keys", "-t", session, "q")
        deadline = time.monotonic() + 15
        while session in tmux("list-sessions", "-F", "#{session_name}"):
            assert time.monotonic() < deadline, "llamalab-tui did not quit on q"
            time.sleep(0.2)
    finally:
        tmux("kill-session", "-t", session)


def _tmux_tui(session: str, tmp_path: Path, size: tuple[int, int] = (100, 30)) -> int:
    """Open the installed app in a detached tmux pane; returns the app's PID.

    The pane's environment is the tmux server's, whoever started it, not this process's: the
    test's own folders are passed with `new-session -e`, so the app reads this test's settings.
    The app runs under a shell that writes its exit status to `exit-status`: tmux 3.3 may leave
    a pane's process unreaped (and its `pane_dead_status` empty) once a signal has ended it.
    """
    env = {
        "LLAMALAB_HOME": str(tmp_path / "home"),
        "LLAMALAB_CONFIG": str(tmp_path / "config"),
        "TERM": "xterm-256color",
    }
    given = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    command = f"'{TUI}'; echo $? > '{tmp_path / 'exit-status'}'"
    subprocess.run(
        [*TMUX, "new-session", "-d", "-s", session, *given,
         "-x", str(size[0]), "-y", str(size[1]), command],
        env={**os.environ, **env},
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    shell = psutil.Process(int(tmux("list-panes", "-t", session, "-F", "#{pane_pid}").split()[0]))
    deadline = time.monotonic() + 10
    while not (apps := [p for p in shell.children() if p.name() == "llamalab-tui"]):
        assert time.monotonic() < deadline, "llamalab-tui did not start in its pane"
        time.sleep(0.05)
    return apps[0].pid


def exit_status(tmp_path: Path, timeout: float = 20) -> str:
    """The app's exit status, as its pane's shell recorded it."""
    status = tmp_path / "exit-status"
    deadline = time.monotonic() + timeout
    while not status.exists() or not status.read_text().strip():
        assert time.monotonic() < deadline, "the app did not exit"
        time.sleep(0.2)
    return status.read_text().strip()


def _ended(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _servers_of(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in kids if p.name() in ("llama-server", "nginx")]


def _rows(results: Path) -> list[str]:
    return [
        line for f in results.glob("*.jsonl") for line in f.read_text().splitlines() if line.strip()
    ]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by ./lab test")
@pytest.mark.parametrize("ending", ["SIGHUP", "SIGTERM", "SIGKILL"])
def test_app_ending_mid_run_leaves_no_server_and_keeps_rows(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
    server_bin: Path,
    model: Path,
) -> None:
    """A dropped SSH session (tmux kills the pane: SIGHUP), a `kill`, or a `kill -9` of the app
    in the middle of a sweep: its llama-servers are gone within seconds and the cells already
    finished stay in the results file."""
    monkeypatch.setenv("LLAMALAB_CONFIG", str(tmp_path / "config"))
    base = free_port_block(2)
    results = tmp_path / "results"
    save_last(
        RunSettings(
            kind="sweep-round-robin",
            instances="1",
            parallel="2",
            n_predict="4,256",  # the first cell ends at once, the second runs on
            concurrency="2",
            requests="64",
            server_bin=str(server_bin),
            model=str(model),
            base_port=str(base),
            nginx_port=str(base + 1),
            results=str(results),
        )
    )
    session = f"llamalab-{uuid.uuid4().hex[:8]}"
    try:
        app_pid = _tmux_tui(session, tmp_path)
        app = psutil.Process(app_pid)  # before it can end: the app itself must not linger either
        wait_screen(session, "Configure")
        tmux("send-keys", "-t", session, "s")
        deadline = time.monotonic() + 120
        while not _rows(results):
            assert time.monotonic() < deadline, f"no row written:\n{screen(session)}"
            time.sleep(0.5)
        servers = _servers_of(app_pid)
        assert any(p.name() == "llama-server" for p in servers), "the second cell is not running"
        tmux("set-option", "-t", session, "remain-on-exit", "on")
        if ending == "SIGHUP":
            tmux("kill-session", "-t", session)
        else:
            os.kill(app_pid, getattr(signal, ending))
        gone, alive = psutil.wait_procs(servers, timeout=15)
        assert not alive, f"{ending}: still running {[(p.pid, p.name()) for p in alive]}"
        assert len(gone) == len(servers)
        deadline = time.monotonic() + 15
        while not _ended(app):  # tmux may reap its pane's process a moment later: a zombie ended
            assert time.monotonic() < deadline, f"{ending}: llamalab-tui still running"
            time.sleep(0.2)
        if ending == "SIGTERM":  # handled: the app stopped its run and exited by itself
            assert exit_status(tmp_path) == "0"
        rows = [json.loads(line) for line in _rows(results)]
        assert rows[0]["n_predict"] == 4 and rows[0]["requests_ok"] == 64
    finally:
        tmux("kill-session", "-t", session)
