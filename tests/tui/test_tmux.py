"""The installed `llamalab-tui` in a real terminal: tmux types the keys and reads the screen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
TUI = Path(sys.executable).parent / "llamalab-tui"


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=False, timeout=10
    ).stdout


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
    env = {
        **os.environ,
        "LLAMALAB_HOME": str(tmp_path / "home"),
        "LLAMALAB_CONFIG": str(tmp_path / "config"),
        "TERM": "xterm-256color",
    }
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", str(TUI)],
        env=env,
        check=True,
        cwd=tmp_path,
    )
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
