"""The load generator: C clients in one event loop, each sending its next request when done.

One process must hold 1024 requests in flight, so there are no threads and no task per request:
C worker coroutines share one session (its connector sized to C, connections kept alive) and
pull request numbers from a shared counter. Records stay raw; `stats` derives the figures, so
the definitions live in one place.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tui_lab.engine.config import Api

# Fixed and about 30 tokens, so prompt processing is small and equal across cells.
DEFAULT_PROMPT = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle. "
    "Describe the sea, the weather and what the message says."
)

# Sockets beyond the clients': the servers' log files, stdio, and the engine's own connections.
_SPARE_FDS = 256


@dataclass(frozen=True)
class LoadSpec:
    url: str  # base URL, e.g. "http://127.0.0.1:8000" (no trailing path)
    concurrency: int
    requests: int  # measured requests in all
    n_predict: int
    prompt: str = DEFAULT_PROMPT
    api: Api = "completion"  # /completion or /v1/chat/completions
    stream: bool = False
    temperature: float = 0.0
    ignore_eos: bool = True  # every request generates exactly n_predict tokens
    cache_prompt: bool = False  # cells compare fairly: no prompt-cache hits
    timeout_s: float = 600.0  # per attempt, from sending to the last byte read
    warmup: int = 0  # requests before the measured ones, excluded from figures
    max_retries: int = 30  # retries of 503 "Loading model" per request
    retry_delay_s: float = 0.5
    api_key: str | None = None  # sent as "Authorization: Bearer ..."


@dataclass(frozen=True)
class RequestRecord:
    """One request as it happened; figures are derived later, in `stats`.

    `start` is when the request was first sent, not when its last attempt began: a client
    waiting out 503s is waiting for its answer, so retries belong in its latency.
    """

    index: int
    start: float  # time.perf_counter() when first sent
    end: float
    status: int | None  # HTTP status of the last attempt, None if no response
    output_tokens: int  # the server's count (or streamed content chunks), 0 unless OK
    prompt_tokens: int
    first_token: float | None  # perf_counter of the first chunk carrying content (streaming)
    chunk_times: tuple[float, ...]  # arrival of each chunk carrying content (streaming)
    retries: int  # 503 retries made
    error: str | None  # None when OK; else "http_<status>", "timeout", "connection", "bad_response"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LoadResult:
    records: tuple[RequestRecord, ...]  # measured only, ordered by index
    warmup_records: tuple[RequestRecord, ...]
    wall_start: float  # perf_counter at the start of the measured phase
    wall_end: float


@dataclass(frozen=True)
class _Attempt:
    status: int | None
    error: str | None = None
    output_tokens: int = 0
    prompt_tokens: int = 0
    chunk_times: tuple[float, ...] = ()


async def run_load(
    spec: LoadSpec, on_record: Callable[[RequestRecord], None] | None = None
) -> LoadResult:
    """Warm-up requests first (not reported to `on_record`), then the measured ones."""
    _allow_open_sockets(spec.concurrency + _SPARE_FDS)
    headers = {"Content-Type": "application/json"}
    if spec.api_key:
        headers["Authorization"] = f"Bearer {spec.api_key}"
    path = "/completion" if spec.api == "completion" else "/v1/chat/completions"
    url = spec.url + path
    body = json.dumps(_body(spec)).encode()
    connector = aiohttp.TCPConnector(limit=spec.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:

        def send(index: int) -> Awaitable[RequestRecord]:
            return _request(session, url, body, spec, index)

        warmup = await _phase(send, spec.warmup, spec.concurrency, None)
        wall_start = time.perf_counter()
        records = await _phase(send, spec.requests, spec.concurrency, on_record)
        wall_end = time.perf_counter()
    return LoadResult(records, warmup, wall_start, wall_end)


def _allow_open_sockets(needed: int) -> None:
    """Raise the soft open-files limit toward the hard one: a common soft limit of 1024 would
    turn the 1020th client's connect into a spurious "connection" error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _body(spec: LoadSpec) -> dict[str, Any]:
    common = {
        "temperature": spec.temperature,
        "ignore_eos": spec.ignore_eos,
        "cache_prompt": spec.cache_prompt,
        "stream": spec.stream,
    }
    if spec.api == "completion":
        return {"prompt": spec.prompt, "n_predict": spec.n_predict, **common}
    body = {
        "messages": [{"role": "user", "content": spec.prompt}],
        "max_tokens": spec.n_predict,
        **common,
    }
    if spec.stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _phase(
    send: Callable[[int], Awaitable[RequestRecord]],
    count: int,
    concurrency: int,
    on_record: Callable[[RequestRecord], None] | None,
) -> tuple[RequestRecord, ...]:
    """C workers drain one shared iterator: each takes the next index only when its previous
    request finished, so exactly C requests are in flight until the queue runs dry."""
    records: dict[int, RequestRecord] = {}
    indices = iter(range(count))

    async def worker() -> None:
        for index in indices:
            record = await send(index)
            records[index] = record
            if on_record is not None:
                on_record(record)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, count)):
            group.create_task(worker())
    return tuple(records[i] for i in range(count))


async def _request(
    session: aiohttp.ClientSession, url: str, body: bytes, spec: LoadSpec, index: int
) -> RequestRecord:
    start = time.perf_counter()
    retries = 0
    attempt = await _attempt(session, url, body, spec)
    while attempt.status == 503 and retries < spec.max_retries:
        retries += 1
        await asyncio.sleep(spec.retry_delay_s)
        attempt = await _attempt(session, url, body, spec)
    times = attempt.chunk_times
    return RequestRecord(
        index=index,
        start=start,
        end=time.perf_counter(),
        status=attempt.status,
        output_tokens=attempt.output_tokens,
        prompt_tokens=attempt.prompt_tokens,
        first_token=times[0] if times else None,
        chunk_times=times,
        retries=retries,
        error=attempt.error,
    )


async def _attempt(
    session: aiohttp.ClientSession, url: str, body: bytes, spec: LoadSpec
) -> _Attempt:
    """One POST, its failure reduced to a short kind so a sweep keeps going past it."""
    status: int | None = None
    try:
        async with session.post(url, data=body) as resp:
            status = resp.status
            if not 200 <= status < 300:
                return _Attempt(status, f"http_{status}")
            if spec.stream:
                return await _read_stream(resp, spec.api)
            counts = _counts(spec.api, _json_object(await resp.read()))
            if counts is None:
                return _Attempt(status, "bad_response")
            return _Attempt(status, None, *counts)
    except TimeoutError:  # before ClientError: aiohttp's timeouts are both
        return _Attempt(status, "timeout")
    except aiohttp.ClientError:
        return _Attempt(status, "connection")
    except (ValueError, TypeError, KeyError, AttributeError):  # malformed JSON or shape
        return _Attempt(status, "bad_response")


async def _read_stream(resp: aiohttp.ClientResponse, api: Api) -> _Attempt:
    """Times each content-bearing event as it arrives; the server's count is taken from the
    last event that has one (the final one), falling back to the number of content events."""
    times: list[float] = []
    counts: tuple[int, int] | None = None
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        now = time.perf_counter()
        payload = line[5:].strip()
        if payload == b"[DONE]":
            continue  # read on to the end, so the connection can be reused
        event = _json_object(payload)
        if "error" in event:
            return _Attempt(resp.status, "bad_response")
        if _content(api, event):
            times.append(now)
        counts = _counts(api, event) or counts
    if counts is None:
        if not times:
            return _Attempt(resp.status, "bad_response")
        counts = (len(times), 0)
    return _Attempt(resp.status, None, *counts, tuple(times))


def _json_object(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _content(api: Api, event: dict[str, Any]) -> bool:
    if api == "completion":
        return bool(event.get("content"))
    choices = event.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _counts(api: Api, obj: dict[str, Any]) -> tuple[int, int] | None:
    """(output, prompt) tokens as the server counted them, or None when this object has none."""
    if api == "completion":
        if "tokens_predicted" not in obj:
            return None
        return int(obj["tokens_predicted"]), int(obj.get("tokens_evaluated", 0))
    usage = obj.get("usage")
    if not usage:
        return None
    return int(usage["completion_tokens"]), int(usage.get("prompt_tokens", 0))
