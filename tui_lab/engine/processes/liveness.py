"""Whether a llama-server still answers: its /health probed every second, and the rule that
declares it hung.

A frozen, deadlocked or thrashing server keeps its process and its port, so nothing exits and
nginx goes on sending it requests that wait out their whole timeout. Only asking it tells: a
server whose last good answer to /health is older than the timeout is hung. The rule is a pure
function of the probes' results, kept apart from the poller, so a sweep's cells and the
standing cluster's supervisor judge a server the same way.

llama-server answers /health from its HTTP threads (503 while the model loads, 200 after), not
from the decode loop, so a server busy with every slot still answers at once; the lab sizes its
HTTP threads with headroom for these probes (plan/config.py, HTTP_THREAD_HEADROOM).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import aiohttp

PROBE_EVERY_S = 1.0
# A probe slower than this is no answer. Short, so a hung server is noticed within about the
# liveness timeout plus this; long enough that a loaded box's slow accept is not mistaken for
# a hang (the timeout needs several silent probes in a row anyway).
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Liveness:
    """What one server's probes have shown: when it last answered 200 (time.monotonic()).

    None: it never has, so it is still loading (503) or not yet listening; the start's own
    ready timeout bounds that phase, not this rule.
    """

    last_answer: float | None = None

    def probed(self, sent: float, answered: bool) -> Liveness:
        """After a probe sent at `sent`: an answer counts from when it was asked, not when it
        arrived, so a slow answer never makes a server look younger than it is."""
        if not answered or (self.last_answer is not None and sent <= self.last_answer):
            return self
        return replace(self, last_answer=sent)

    def hung(self, now: float, timeout_s: float) -> bool:
        """A server that answered before and has not for longer than `timeout_s`."""
        return self.last_answer is not None and now - self.last_answer > timeout_s


@dataclass(frozen=True)
class HealthTarget:
    index: int  # the instance's number, as events name it
    url: str  # its base URL


async def answers(session: aiohttp.ClientSession, url: str, timeout_s: float) -> bool:
    """One probe: True when /health says 200 within `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s), session.get(f"{url}/health") as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


# Told a hung server and when it last answered (time.monotonic()); once per server.
OnHung = Callable[[HealthTarget, float], None]


async def watch(
    session: aiohttp.ClientSession,
    targets: Sequence[HealthTarget],
    timeout_s: float,
    on_hung: OnHung,
    *,
    ready_since: float | None = None,
    every_s: float = PROBE_EVERY_S,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> None:
    """Probe every target until cancelled, each on its own clock so one silent server does not
    slow the probes of the others. `ready_since`: when the targets last said ready (their
    start's own check), which counts as their first answer."""
    await asyncio.gather(
        *(
            _watch_one(session, t, timeout_s, on_hung, ready_since, every_s, probe_timeout_s)
            for t in targets
        )
    )


async def _watch_one(
    session: aiohttp.ClientSession,
    target: HealthTarget,
    timeout_s: float,
    on_hung: OnHung,
    ready_since: float | None,
    every_s: float,
    probe_timeout_s: float,
) -> None:
    state = Liveness(ready_since)
    while True:
        sent = time.monotonic()
        state = state.probed(sent, await answers(session, target.url, probe_timeout_s))
        if state.hung(time.monotonic(), timeout_s):
            assert state.last_answer is not None
            on_hung(target, state.last_answer)
            return
        await asyncio.sleep(max(0.0, sent + every_s - time.monotonic()))
