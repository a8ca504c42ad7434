"""Port checks made before anything is launched, so a taken port never leaves half a cluster up."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from tui_lab.engine.errors import LabError


def port_is_free(host: str, port: int) -> bool:
    """Bind the way llama-server and nginx will (SO_REUSEADDR), so TIME_WAIT is not "in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_free(host: str, ports: Iterable[tuple[int, str]]) -> None:
    """Raise for the first (port, owner) already taken on `host`."""
    for port, owner in ports:
        if not port_is_free(host, port):
            raise LabError(f"port {port} ({owner}) is already in use on {host}")
