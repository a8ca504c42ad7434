"""The lab's private folders: logs, nginx config and state of each run, readable by the user only.

`LLAMALAB_HOME` moves them (tests use a temporary one); by default they live in the user's
state folder, never in a system location.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import platformdirs


def lab_home() -> Path:
    home = os.environ.get("LLAMALAB_HOME")
    return Path(home) if home else Path(platformdirs.user_state_dir("llamalab"))


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it 0700: logs can hold prompts, state holds API keys."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def new_run_dir(kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    private_dir(lab_home())
    return private_dir(lab_home() / "runs" / f"{stamp}-{kind}-{os.getpid()}")


def cluster_dir() -> Path:
    private_dir(lab_home())
    return private_dir(lab_home() / "cluster")


def write_state_file(path: Path, state: dict[str, Any]) -> None:
    """Atomic replace, so a reader never sees half a file; readable by the user only."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    tmp.replace(path)
