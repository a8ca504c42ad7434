"""Figures from raw request records, defined as vLLM's benchmark defines them.

Following vllm/benchmarks/serve.py keeps our numbers comparable with the figures people already
quote. Only successful requests enter latencies and token counts; failures are counted apart,
so a cell that half failed cannot look fast. Values stay unrounded: rounding is for display.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import pairwise
from statistics import fmean
from types import MappingProxyType
from typing import NamedTuple

from tui_lab.engine.load.client import LoadResult, OpenLoopCounts, RequestRecord

_LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")
_POINTS = ("p50", "p90", "p99", "mean")
_TOTALS = (
    "requests_ok",
    "requests_failed",
    "retries",
    "output_tokens",
    "prompt_tokens",
    "wall_s",
    "output_tok_per_s",
    "requests_per_s",
)
# From the servers' own accounting of each request; None where no request reported it.
_CACHE_AND_PHASES = (
    "cached_prompt_tokens",
    "cache_hit_rate",
    "prefill_tok_per_s",
    "decode_tok_per_s",
)
# Open loop only (None under closed loop): the rates and the client's own queue.
_OPEN_LOOP = ("offered_rate", "achieved_rate", "client_queue_max", "client_wait_ms_p99")


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p90: float | None
    p99: float | None
    mean: float | None


def percentiles(values: Sequence[float]) -> Percentiles:
    """Linear interpolation between closest ranks, numpy's default, so figures match vLLM's."""
    if not values:
        return Percentiles(None, None, None, None)
    ordered = sorted(values)

    def at(q: float) -> float:
        pos = q / 100 * (len(ordered) - 1)
        low = math.floor(pos)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    return Percentiles(at(50), at(90), at(99), fmean(ordered))


@dataclass(frozen=True)
class RunSummary:
    requests_ok: int
    requests_failed: int
    retries: int
    output_tokens: int
    prompt_tokens: int
    wall_s: float
    output_tok_per_s: float
    requests_per_s: float
    cached_prompt_tokens: int | None
    cache_hit_rate: float | None  # cached / prompt tokens of the requests that report a cache
    prefill_tok_per_s: float | None  # prompt tokens evaluated / the server's prefill time
    decode_tok_per_s: float | None  # one request's decode speed: its tokens / its decode time
    offered_rate: float | None  # arrivals / the arrivals window, as drawn
    achieved_rate: float | None  # served arrivals per second, as they left (OpenLoopCounts)
    client_queue_max: int | None  # most arrivals waiting in the client for the cap at once
    client_wait_ms_p99: float | None  # an arrival's wait there, from arrival to sending
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    itl_ms: Percentiles
    e2el_ms: Percentiles
    errors: Mapping[str, int]  # kind -> count; a read-only MappingProxyType

    @classmethod
    def flat_keys(cls) -> tuple[str, ...]:
        """The columns of `to_flat_dict`, so a failed cell's row can have them all, empty."""
        latency = tuple(f"{name}_{point}" for name in _LATENCIES for point in _POINTS)
        return (*_TOTALS, *_CACHE_AND_PHASES, *_OPEN_LOOP, *latency, "errors")

    def to_flat_dict(self) -> dict[str, object]:
        """One level of scalars, for CSV rows and tables."""
        flat: dict[str, object] = {
            name: getattr(self, name) for name in (*_TOTALS, *_CACHE_AND_PHASES, *_OPEN_LOOP)
        }
        for name in _LATENCIES:
            for point in _POINTS:
                flat[f"{name}_{point}"] = getattr(getattr(self, name), point)
        flat["errors"] = ";".join(f"{kind}:{n}" for kind, n in sorted(self.errors.items()))
        return flat

    def to_json_dict(self) -> dict[str, object]:
        """The flat figures plus each latency as an object, for scripts that prefer nesting."""
        out = self.to_flat_dict()
        for name in _LATENCIES:
            latency = getattr(self, name)
            out[name] = {f.name: getattr(latency, f.name) for f in fields(latency)}
        out["errors"] = dict(sorted(self.errors.items()))
        return out


def summarize(
    result_records: Sequence[RequestRecord],
    wall_s: float,
    open_loop: OpenLoopCounts | None = None,
) -> RunSummary:
    """`wall_s` is the measured phase's wall time; throughput is over it, not summed latencies,
    because concurrent requests overlap. Under open loop it runs from the first arrival."""
    ok = [r for r in result_records if r.ok]
    ttft: list[float] = []
    tpot: list[float] = []
    itl: list[float] = []
    for r in ok:
        itl.extend(b - a for a, b in pairwise(r.chunk_times))
        if r.first_token is None:
            continue
        first = r.first_token - r.start
        ttft.append(first)
        if r.output_tokens > 1:
            tpot.append((r.end - r.start - first) / (r.output_tokens - 1))
    output_tokens = sum(r.output_tokens for r in ok)
    # An arrival's wait in the client, failed or not: it waited all the same.
    waits = [r.start - r.arrived for r in result_records if r.arrived is not None]
    errors = Counter(r.error for r in result_records if r.error is not None)
    return RunSummary(
        requests_ok=len(ok),
        requests_failed=len(result_records) - len(ok),
        retries=sum(r.retries for r in result_records),
        output_tokens=output_tokens,
        prompt_tokens=sum(r.prompt_tokens for r in ok),
        wall_s=wall_s,
        output_tok_per_s=output_tokens / wall_s if wall_s > 0 else 0.0,
        requests_per_s=len(ok) / wall_s if wall_s > 0 else 0.0,
        **_cache_and_phases(ok)._asdict(),
        offered_rate=open_loop.offered_rate if open_loop else None,
        achieved_rate=open_loop.achieved_rate if open_loop else None,
        client_queue_max=open_loop.queued_max if open_loop else None,
        client_wait_ms_p99=_ms(waits).p99 if open_loop else None,
        ttft_ms=_ms(ttft),
        tpot_ms=_ms(tpot),
        itl_ms=_ms(itl),
        e2el_ms=_ms([r.end - r.start for r in ok]),
        errors=MappingProxyType(dict(errors)),
    )


class _CacheAndPhases(NamedTuple):
    cached_prompt_tokens: int | None
    cache_hit_rate: float | None
    prefill_tok_per_s: float | None
    decode_tok_per_s: float | None


def _cache_and_phases(ok: Sequence[RequestRecord]) -> _CacheAndPhases:
    """Each figure over the requests that report its inputs, so a server that reports none
    gives None, never a 0 that reads as "no cache hits". Rates divide summed tokens by summed
    server time: a request's own speed, weighted by its time, not the cell's throughput."""
    cached = [(r.cached_tokens, r.prompt_tokens) for r in ok if r.cached_tokens is not None]
    hits, prompts = sum(c for c, _ in cached), sum(p for _, p in cached)
    prefill = [
        (r.prefill_tokens, r.prefill_ms)
        for r in ok
        if r.prefill_tokens is not None and r.prefill_ms is not None
    ]
    decode = [(r.output_tokens, r.decode_ms) for r in ok if r.decode_ms is not None]
    return _CacheAndPhases(
        cached_prompt_tokens=hits if cached else None,
        cache_hit_rate=hits / prompts if prompts > 0 else None,
        prefill_tok_per_s=_per_s(prefill),
        decode_tok_per_s=_per_s(decode),
    )


def _per_s(tokens_ms: Sequence[tuple[int, float]]) -> float | None:
    ms = sum(m for _, m in tokens_ms)
    return sum(t for t, _ in tokens_ms) / ms * 1000 if ms > 0 else None


def summarize_load(result: LoadResult) -> RunSummary:
    wall_s = result.wall_end - result.wall_start
    return summarize(result.records, wall_s, result.open_loop)


def _ms(seconds: Sequence[float]) -> Percentiles:
    return percentiles([s * 1000 for s in seconds])
