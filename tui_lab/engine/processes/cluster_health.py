"""The standing cluster heals itself: a dead or hung llama-server is taken out of nginx's
rotation, killed, restarted on its port and put back once its `/health` answers.

Nobody watches a standing cluster (it serves Open WebUI or an agent for days), so its
supervisor does: it polls each instance's `/health` and notices its process exit. An instance
whose `/health` has not answered for `liveness_timeout` is hung (frozen, deadlocked,
thrashing); with the timeout off, only a dead one is healed. A hung one is killed at once
rather than asked to stop, because the requests stuck on it then fail straight away instead of
waiting out nginx's long read timeout; the requests on it are all its clients lose, since
nginx's reload sends every new one to the others meanwhile. Restarts back off (1 s, 2 s, ...
up to a minute) while an instance keeps failing, so a model that crashes at start does not
loop hot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tui_lab.engine.errors import LabError
from tui_lab.engine.processes.cluster import Cluster
from tui_lab.engine.processes.liveness import PROBE_EVERY_S, PROBE_TIMEOUT_S, Liveness, answers

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 60.0
# Back for this long without a fault: the next fault starts the backoff afresh.
STABLE_S = 60.0
HISTORY_KEPT = 50  # the state file keeps the latest incidents, not a log of days


@dataclass(frozen=True)
class Incident:
    """One step of a fault and its healing, as `cluster status` and the TUI show it."""

    time: float  # wall clock
    index: int  # the llama-server's index
    what: str  # "died", "hung", "out of rotation", "restart failed", "restarted", ...
    detail: str = ""

    def describe(self, *, detail: bool = True) -> str:
        """`14:02:11 server 1 hung: pid 4242: no answer ...`; the TUI's status line leaves the
        detail out (80 columns), `cluster status` gives it."""
        clock = time.strftime("%H:%M:%S", time.localtime(self.time))
        text = f"{clock} server {self.index} {self.what}"
        return f"{text}: {self.detail}" if detail and self.detail else text

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "index": self.index, "what": self.what, "detail": self.detail}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Incident:
        return cls(
            float(entry["time"]),
            int(entry["index"]),
            str(entry["what"]),
            str(entry.get("detail") or ""),
        )


def restart_delay(failures: int) -> float:
    """The wait before a restart after `failures` recent ones: none for the first fault, then
    doubling up to the cap."""
    if failures <= 0:
        return 0.0
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** (failures - 1))


class Healer:
    """Watches every instance of a running cluster and heals each on its own."""

    def __init__(
        self,
        cluster: Cluster,
        session: aiohttp.ClientSession,
        liveness_timeout_s: float | None,
        record: Callable[[Incident], None],
    ) -> None:
        self.cluster = cluster
        self.session = session
        self.liveness_timeout_s = liveness_timeout_s
        self.record = record
        self.down: frozenset[int] = frozenset()
        self._reloads = asyncio.Lock()  # one nginx reload at a time, each with the whole set
        self._failures = [0] * len(cluster.instances)
        self._back_at: list[float | None] = [None] * len(cluster.instances)

    async def run(self) -> None:
        await asyncio.gather(*(self._watch(i) for i in range(len(self.cluster.instances))))

    def _note(self, index: int, what: str, detail: str = "") -> None:
        self.record(Incident(time.time(), index, what, detail))

    async def _watch(self, index: int) -> None:
        while True:
            what, detail = await self._fault(index)
            self._note(index, what, detail)
            await self._heal(index, hung=what == "hung")

    async def _fault(self, index: int) -> tuple[str, str]:
        """Wait until the instance dies or stays silent past the bound: the sweeps' rule
        (processes/liveness.py), from when it was last ready."""
        bound = self.liveness_timeout_s
        liveness = Liveness(time.monotonic())
        while True:
            inst = self.cluster.instances[index]
            if not inst.process.running:
                return "died", f"pid {inst.pid} exit status {inst.process.returncode}"
            if bound is not None:
                asked = time.monotonic()
                answered = await answers(self.session, inst.url, min(PROBE_TIMEOUT_S, bound))
                liveness = liveness.probed(asked, answered)
                if liveness.hung(time.monotonic(), bound):
                    assert liveness.last_answer is not None
                    silent = time.monotonic() - liveness.last_answer
                    return "hung", f"pid {inst.pid}: no answer to /health for {silent:.0f} s"
            await asyncio.sleep(PROBE_EVERY_S)

    async def _rotate(self, index: int, *, out: bool) -> None:
        async with self._reloads:
            down = self.down | {index} if out else self.down - {index}
            try:
                if self.cluster.proxy is not None:
                    await self.cluster.proxy.reload(down)
            except LabError as exc:
                self._note(index, "nginx reload failed", str(exc))
                return
            self.down = down
        self._note(index, "out of rotation" if out else "back in rotation", "nginx reloaded")

    async def _heal(self, index: int, *, hung: bool) -> None:
        back_at = self._back_at[index]
        recent = back_at is not None and time.monotonic() - back_at < STABLE_S
        self._failures[index] = self._failures[index] + 1 if recent else 0
        await self._rotate(index, out=True)
        old_pid = self.cluster.instances[index].pid
        while True:
            delay = restart_delay(self._failures[index])
            if delay:
                self._note(index, "restarting", f"in {delay:.0f} s")
                await asyncio.sleep(delay)
            try:
                await self.cluster.restart_instance(index, self.session, grace_s=0 if hung else 10)
                break
            except LabError as exc:
                self._failures[index] += 1
                self._note(index, "restart failed", str(exc))
        new_pid = self.cluster.instances[index].pid
        self._note(index, "restarted", f"pid {old_pid} replaced by {new_pid}")
        self._back_at[index] = time.monotonic()
        await self._rotate(index, out=False)
