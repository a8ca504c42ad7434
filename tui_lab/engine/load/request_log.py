"""Requests a llama-server has finished, counted from its own log.

llama-server's /metrics has token counters but no request counter. It logs one
`print_timing ... total time` line per finished request, the one per-instance count that covers
the lab's load, nginx's share of outside clients and a standing cluster alike. The log is read
incrementally, so a long run costs only its new bytes per round. A restarted instance appends
to the same log: the count is the instance's, across restarts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FINISHED = re.compile(rb"print_timing: .*total time\s*=", re.MULTILINE)
READ_LIMIT = 8 << 20  # a round reads at most this much; the rest waits for the next round


@dataclass
class _Position:
    offset: int = 0
    count: int = 0
    partial: bytes = b""


class RequestLogCounter:
    def __init__(self) -> None:
        self._positions: dict[Path, _Position] = {}

    def count(self, log: Path) -> int | None:
        """Finished requests so far; None when the log cannot be read (never a made-up 0)."""
        pos = self._positions.setdefault(log, _Position())
        try:
            with log.open("rb") as fh:
                fh.seek(pos.offset)
                chunk = fh.read(READ_LIMIT)
        except OSError:
            return None
        pos.offset += len(chunk)
        # Only whole lines count; a line being written is completed next round.
        data = pos.partial + chunk
        end = data.rfind(b"\n") + 1
        pos.count += len(FINISHED.findall(data, 0, end))
        pos.partial = data[end:]
        return pos.count

    def keep_only(self, logs: set[Path]) -> None:
        for gone in self._positions.keys() - logs:
            del self._positions[gone]
