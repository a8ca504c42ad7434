"""Port checks made before anything is launched, so a taken port never leaves half a cluster up."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

from tui_lab.engine.errors import LabError

MAX_PORT = 65535


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


# Below Linux's ephemeral range (32768-60999 by default), where the kernel hands out the local
# ports of outgoing connections: a port free when checked could be taken by one a moment later.
TEST_PORTS = (20000, 32768)


def free_port_block(count: int) -> int:
    """A base port with `count` consecutive free ports, away from the defaults users run
    (for tests and benchmarks running beside a user's lab)."""
    low, high = TEST_PORTS
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def check_port_layout(base_port: int, nginx_port: int, instances: int, *, proxied: bool) -> None:
    """Servers take base_port .. base_port+N-1; nginx among them would bind a server's port
    (or the other way round) and the load would silently bypass the proxy."""
    last = base_port + instances - 1
    if last > MAX_PORT:
        raise LabError(
            f"--instances {instances} from --base-port {base_port} needs ports up to {last}, "
            f"above {MAX_PORT}"
        )
    if proxied and base_port <= nginx_port <= last:
        raise LabError(
            f"--nginx-port {nginx_port} is one of the servers' ports {base_port}-{last}: "
            "pick one outside that range"
        )


def ensure_free(host: str, ports: Iterable[tuple[int, str]]) -> None:
    """Raise for the first (port, owner) already taken on `host`."""
    for port, owner in ports:
        if not port_is_free(host, port):
            raise LabError(f"port {port} ({owner}) is already in use on {host}")
