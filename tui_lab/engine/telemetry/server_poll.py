"""What each llama-server says of itself: /metrics and /slots, polled a few servers at a time,
and the live tokens/s those reports give, per server and for the whole lab."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from time import monotonic

import aiohttp
import orjson

from tui_lab.engine.load.server_metrics import (
    REQUESTS_DEFERRED,
    TOKENS_PREDICTED,
    auth_headers,
    kv_cache_usage,
    scrape,
)

POLL_TIMEOUT_S = 1.0  # a server slower than this to report is shown as not answering
# Servers polled at once. All 64 of a GPU box at once made ~128 connections ready together,
# and asyncio runs every ready callback before it looks at a timer again: a ~40 ms stall of
# the loop the TUI and the load share, once a second. A few at a time keep each burst short.
POLLS_AT_ONCE = 8
# How long a server's last rate still counts towards the total: a server that missed a round
# (a late poll) would otherwise drop the lab's throughput to a dip that never happened.
TOTAL_WINDOW_S = 2.5


@dataclass(frozen=True)
class ServerReport:
    time: float  # when the server answered, so a slow poll does not skew the rate
    slots_busy: int | None
    slots_total: int | None
    requests_processing: int | None
    requests_deferred: int | None
    tokens_predicted_total: int | None
    tokens_in_flight: int = 0  # generated so far by requests not yet finished
    kv_cache_usage: float | None = None  # 0..1; None from builds that do not export it


SILENT = ServerReport(0.0, None, None, None, None, None)


async def poll(
    session: aiohttp.ClientSession, url: str, api_key: str | None, polls: asyncio.Semaphore
) -> ServerReport | None:
    """/metrics and /slots, or None if either fails or is late. Asked at once, so the server
    usually answers both between the same two decode steps and the token counts agree. The
    timeout starts once `polls` lets this server's turn come, not while it waits for it."""
    try:
        async with polls, asyncio.timeout(POLL_TIMEOUT_S):
            metrics, slots = await asyncio.gather(
                scrape(session, url, api_key), _slots(session, url, api_key)
            )
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return ServerReport(
        time=monotonic(),
        slots_busy=sum(1 for slot in slots if slot.get("is_processing")),
        slots_total=len(slots),
        requests_processing=_count(metrics, "llamacpp:requests_processing"),
        requests_deferred=_count(metrics, REQUESTS_DEFERRED),
        tokens_predicted_total=_count(metrics, TOKENS_PREDICTED),
        tokens_in_flight=sum(_decoded(slot) for slot in slots if slot.get("is_processing")),
        kv_cache_usage=kv_cache_usage(metrics),
    )


async def _slots(
    session: aiohttp.ClientSession, url: str, api_key: str | None
) -> list[dict[str, object]]:
    async with session.get(f"{url}/slots", headers=auth_headers(api_key)) as resp:
        resp.raise_for_status()
        # orjson, not the json module: with 64 slots a server /slots is ~20 KB a poll, 90 us
        # to parse against 220 us.
        slots = orjson.loads(await resp.read())
    if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
        raise ValueError("/slots did not answer a list of slots")
    return slots


def _decoded(slot: Mapping[str, object]) -> int:
    """Tokens a busy slot has generated so far (`next_token` is a list in current builds, an
    object in older ones; a build without it leaves the rate to the finished-request counter)."""
    entries = slot.get("next_token")
    if not isinstance(entries, list):
        entries = [entries]
    return sum(int(e.get("n_decoded", 0)) for e in entries if isinstance(e, dict))


def _count(metrics: Mapping[str, float], name: str) -> int | None:
    value = metrics.get(name)
    return None if value is None else int(value)


@dataclass(frozen=True)
class _Counter:
    pid: int
    time: float
    tokens: int


class TokenRates:
    """Each server's tokens/s between its reports, and their sum: the lab's throughput."""

    def __init__(self) -> None:
        self._counters: dict[Hashable, _Counter] = {}
        self._latest: dict[Hashable, tuple[float, float]] = {}  # key -> (round, rate)

    def rate(
        self, key: Hashable, pid: int, report: ServerReport | None, round_time: float
    ) -> float | None:
        """Tokens/s since this process's last report.

        llama-server adds a request's tokens to its counter only when the request finishes, so
        the counter alone reads 0 tok/s for the whole of a long generation and then a spike;
        the slots' running counts make the rate live. A round without a report keeps the old
        count, so the next rate spans the gap instead of starting over.
        """
        if report is None or report.tokens_predicted_total is None:
            return None
        previous = self._counters.get(key)
        tokens = report.tokens_predicted_total + report.tokens_in_flight
        self._counters[key] = _Counter(pid, report.time, tokens)
        if (
            previous is None
            or previous.pid != pid
            # The server restarted; or, rarely, a request finished between the two polls and
            # was counted twice last round (in its slot and in the counter).
            or tokens < previous.tokens
            or report.time <= previous.time
        ):
            return None
        rate = (tokens - previous.tokens) / (report.time - previous.time)
        self._latest[key] = (round_time, rate)
        return rate

    def total(self, round_time: float) -> float | None:
        """The sum of every server's latest rate not older than TOTAL_WINDOW_S; None for a
        round in which no server had a rate, so the total's history gets a point a round."""
        if not any(t == round_time for t, _ in self._latest.values()):
            return None
        return sum(rate for t, rate in self._latest.values() if round_time - t < TOTAL_WINDOW_S)

    def forget(self, key: Hashable) -> None:
        self._counters.pop(key, None)
        self._latest.pop(key, None)

    def clear(self) -> None:
        self._counters.clear()
        self._latest.clear()
