"""The servers' own queues during a cell: requests waiting for a slot, and KV-cache use.

A client can only see its own wait; what waits behind the slots is the server's to say. Under
open loop at a rate above capacity this is where the excess goes: nginx hands every request on,
and each llama-server defers what its slots cannot take (`llamacpp:requests_deferred`). So a
cell samples each instance's `/metrics` while its load runs, and its row carries what they said,
never a figure made up where a server said nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import aiohttp

from tui_lab.engine.load.server_metrics import REQUESTS_DEFERRED, kv_cache_usage, scrape
from tui_lab.engine.load.stats import percentiles

T = TypeVar("T")
SAMPLE_EVERY_S = 0.5  # against a cell of seconds; one /metrics a server each time, ~3 us to parse
SAMPLE_TIMEOUT_S = 1.0  # a server slower than this to answer misses the sample


@dataclass(frozen=True)
class QueueSample:
    """One round: each instance's answer, in instance order (None: it did not answer it)."""

    deferred: tuple[int | None, ...]
    kv_cache: tuple[float | None, ...]


@dataclass(frozen=True)
class QueueFigures:
    """A cell's columns; all None where no sample was taken (a cell shorter than a round)."""

    deferred_p50: float | None = None  # requests waiting for a slot, all instances together
    deferred_max: int | None = None
    instance_deferred_max: str | None = None  # each instance's most, ';'-joined
    instance_kv_max: str | None = None  # each instance's highest KV-cache use (0-1), ';'-joined

    def columns(self) -> dict[str, object]:
        return asdict(self)


def queue_figures(samples: Sequence[QueueSample]) -> QueueFigures:
    """Totals over the rounds every instance answered; per instance, over the rounds it did.
    A per-instance column is empty unless every instance gave a value at least once."""
    if not samples:
        return QueueFigures()
    whole = [sum(d for d in s.deferred if d is not None) for s in samples if None not in s.deferred]
    count = len(samples[0].deferred)
    most_deferred = [
        max((d for s in samples if (d := s.deferred[i]) is not None), default=None)
        for i in range(count)
    ]
    most_kv = [
        max((k for s in samples if (k := s.kv_cache[i]) is not None), default=None)
        for i in range(count)
    ]
    return QueueFigures(
        deferred_p50=percentiles(whole).p50,
        deferred_max=max(whole) if whole else None,
        instance_deferred_max=_joined(most_deferred, str),
        instance_kv_max=_joined(most_kv, lambda k: f"{k:.2f}"),
    )


def _joined(values: Sequence[T | None], form: Callable[[T], str]) -> str | None:
    present = [v for v in values if v is not None]
    if not values or len(present) < len(values):
        return None
    return ";".join(map(form, present))


@dataclass
class QueueSampler:
    """The samples taken so far; `figures` once the cell's load has ended."""

    samples: list[QueueSample] = field(default_factory=list)

    def figures(self) -> QueueFigures:
        return queue_figures(self.samples)


@contextlib.asynccontextmanager
async def sample_queues(
    session: aiohttp.ClientSession, urls: Sequence[str], api_key: str | None
) -> AsyncIterator[QueueSampler]:
    """Sample every SAMPLE_EVERY_S while the body runs (the first after one interval: the
    servers are idle when a cell begins); the sampling ends with the body, however it ends."""
    sampler = QueueSampler()

    async def one(url: str) -> tuple[int | None, float | None]:
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                metrics = await scrape(session, url, api_key)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None, None
        deferred = metrics.get(REQUESTS_DEFERRED)
        return (None if deferred is None else int(deferred)), kv_cache_usage(metrics)

    async def rounds() -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY_S)
            answers = await asyncio.gather(*(one(url) for url in urls))
            sampler.samples.append(
                QueueSample(tuple(d for d, _ in answers), tuple(k for _, k in answers))
            )

    task = asyncio.create_task(rounds())
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
