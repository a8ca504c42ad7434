"""The load generator: C clients in one event loop, each sending its next request when done.

One process must hold 1024 requests in flight, so there are no threads and no task per request:
C worker coroutines share a pool of kept-alive connections (`http_connection`: the request bytes
built once, responses parsed by llhttp) and pull request numbers from a shared counter; bodies
are parsed with orjson, streamed events as bytes inside the socket callback. Records stay raw;
`stats` derives the figures, so the definitions live in one place.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import httptools
import orjson

from tui_lab.engine.load.arrivals import Arrivals, schedule
from tui_lab.engine.load.http_connection import ConnectionPool, StallError, Target
from tui_lab.engine.load.workloads import Script, WorkRequest
from tui_lab.engine.plan.config import Api

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
    stall_s: float = 60.0  # a stream silent this long once begun ends as "stalled"
    warmup: int = 0  # requests before the measured ones, excluded from figures
    max_retries: int = 30  # retries of 503 "Loading model" per request
    retry_delay_s: float = 0.5
    api_key: str | None = None  # sent as "Authorization: Bearer ..."
    # The workload's requests (workloads.build), `requests` of them; None: every request is the
    # same one, built from the fields above (the fixed workload).
    script: Script | None = None
    # Open loop: the measured chains arrive on this schedule (at most `concurrency` requests in
    # flight; an arrival past that waits in the client). None: closed loop, C clients.
    arrivals: Arrivals | None = None


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
    # None when OK; else "http_<status>", "timeout", "stalled", "connection", "tls_certificate",
    # "bad_response"
    error: str | None
    # The server's own phase accounting (its `timings`), None where it does not report it.
    cached_tokens: int | None = None  # prompt tokens reused from the slot's cache
    prefill_tokens: int | None = None  # prompt tokens it evaluated (not from the cache)
    prefill_ms: float | None = None  # its time evaluating those
    decode_ms: float | None = None  # its time generating the output tokens
    # Open loop: perf_counter of the chain's scheduled arrival, on its first request only; until
    # `start` it waited in the client for a free place under the concurrency cap.
    arrived: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LoadResult:
    records: tuple[RequestRecord, ...]  # measured only, ordered by index
    warmup_records: tuple[RequestRecord, ...]
    wall_start: float  # perf_counter at the start of the measured phase (the first arrival)
    wall_end: float
    open_loop: OpenLoopCounts | None = None


@dataclass(frozen=True)
class OpenLoopCounts:
    """What only the client of an open loop knows: its schedule and its own queue."""

    offered_rate: float  # arrivals per second, as drawn (Schedule.offered_rate)
    window_s: float  # the arrivals window: from the first arrival, Schedule.window_s long
    served: int  # arrivals whose requests all succeeded
    queued_max: int  # the most arrivals waiting at once for a place under the concurrency cap
    # From the first served arrival's last answer to the last one's: the span of the departures
    served_span_s: float = 0.0

    @property
    def achieved_rate(self) -> float:
        """Served arrivals per second as the servers let them out: the departures' own rate,
        (served - 1) over their span. Below capacity that is the arrivals' rate, shifted by a
        latency that does not shorten it; above capacity it is what the servers kept up with,
        the backlog draining at their pace. With under two departures there is no span: served
        over the arrivals window."""
        if self.served >= 2 and self.served_span_s > 0:
            return (self.served - 1) / self.served_span_s
        return self.served / self.window_s


class _Counts(NamedTuple):
    """What the server says it did for one request, read from its response."""

    output_tokens: int
    prompt_tokens: int
    cached_tokens: int | None = None
    prefill_tokens: int | None = None
    prefill_ms: float | None = None
    decode_ms: float | None = None


_NO_COUNTS = _Counts(0, 0)  # a failed attempt's


@dataclass(frozen=True)
class _Attempt:
    status: int | None
    error: str | None = None
    counts: _Counts = _NO_COUNTS
    chunk_times: tuple[float, ...] = ()

    @property
    def output_tokens(self) -> int:
        return self.counts.output_tokens

    @property
    def prompt_tokens(self) -> int:
        return self.counts.prompt_tokens


async def run_load(
    spec: LoadSpec, on_record: Callable[[RequestRecord], None] | None = None
) -> LoadResult:
    """Warm-up requests first (not reported to `on_record`), then the measured ones."""
    _allow_open_sockets(spec.concurrency + _SPARE_FDS)
    headers = _headers(spec)
    url = spec.url + _path(spec.api)
    pool = ConnectionPool(Target.post(url, orjson.dumps(_body(spec)), headers))
    measured = _same(spec.requests) if spec.script is None else _scripted(spec, url, headers)
    try:

        def send(
            index: int, request: bytes | None, arrived: float | None = None
        ) -> Awaitable[RequestRecord]:
            return _request(pool, spec, index, request, arrived)

        warmup = await _phase(send, _same(spec.warmup), spec.concurrency, None)
        if spec.arrivals is not None:
            return await _open_loop(send, list(measured), spec, on_record, warmup)
        wall_start = time.perf_counter()
        records = await _phase(send, measured, spec.concurrency, on_record)
        wall_end = time.perf_counter()
    finally:
        pool.close()
    return LoadResult(records, warmup, wall_start, wall_end)


def _headers(spec: LoadSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if spec.api_key:
        headers["Authorization"] = f"Bearer {spec.api_key}"
    return headers


def _path(api: Api) -> str:
    return "/completion" if api == "completion" else "/v1/chat/completions"


# One request as a client sends it: its index, its bytes (None: the pool's own request) and the
# seconds waited before sending it. A chain is sent in order by one client.
_Send = tuple[int, bytes | None, float]
_Chain = Sequence[_Send]


def _same(count: int) -> Iterator[_Chain]:
    """`count` chains of one request each, the pool's own: the fixed workload, lazily."""
    return (((index, None, 0.0),) for index in range(count))


def _scripted(spec: LoadSpec, url: str, headers: dict[str, str]) -> list[_Chain]:
    """The script's requests as bytes, all built before the measured phase starts, so building
    them is not timed."""
    assert spec.script is not None
    chains: list[_Chain] = []
    index = 0
    for chain in spec.script:
        sends = []
        for request in chain:
            own = {**headers, **dict(request.headers)}
            body = orjson.dumps(_body(spec, request))
            sends.append((index, Target.post(url, body, own).request, request.think_s))
            index += 1
        chains.append(tuple(sends))
    if index != spec.requests:
        raise ValueError(f"a script of {index} requests for a load of {spec.requests}")
    return chains


def _allow_open_sockets(needed: int) -> None:
    """Raise the soft open-files limit toward the hard one: a common soft limit of 1024 would
    turn the 1020th client's connect into a spurious "connection" error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _body(spec: LoadSpec, request: WorkRequest | None = None) -> dict[str, Any]:
    """The JSON body: the spec's prompt and n_predict, or those of one workload request."""
    prompt = spec.prompt if request is None else request.prompt
    n_predict = spec.n_predict if request is None else request.max_tokens
    common = {
        "temperature": spec.temperature,
        "ignore_eos": spec.ignore_eos,
        "cache_prompt": spec.cache_prompt,
        "stream": spec.stream,
    }
    if spec.api == "completion":
        if not isinstance(prompt, str):
            raise ValueError("chat messages need the chat API")
        return {"prompt": prompt, "n_predict": n_predict, **common}
    turns = (("user", prompt),) if isinstance(prompt, str) else prompt
    body = {
        "messages": [{"role": role, "content": content} for role, content in turns],
        "max_tokens": n_predict,
        **common,
    }
    if spec.stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def _phase(
    send: Callable[[int, bytes | None], Awaitable[RequestRecord]],
    chains: Iterable[_Chain],
    concurrency: int,
    on_record: Callable[[RequestRecord], None] | None,
) -> tuple[RequestRecord, ...]:
    """C workers drain one shared iterator of chains: each takes the next chain only when its
    previous one finished, and sends a chain's requests in order, each after its think time,
    so at most C requests are in flight until the queue runs dry."""
    records: dict[int, RequestRecord] = {}
    pending = iter(chains)

    async def worker() -> None:
        for chain in pending:
            for index, request, think_s in chain:
                if think_s > 0:
                    await asyncio.sleep(think_s)
                record = await send(index, request)
                records[index] = record
                if on_record is not None:
                    on_record(record)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return tuple(records[i] for i in sorted(records))


_Sender = Callable[[int, bytes | None, float | None], Awaitable[RequestRecord]]


async def _open_loop(
    send: _Sender,
    chains: Sequence[_Chain],
    spec: LoadSpec,
    on_record: Callable[[RequestRecord], None] | None,
    warmup: tuple[RequestRecord, ...],
) -> LoadResult:
    """Chains arrive on the schedule, whatever the servers are doing; `concurrency` workers take
    them oldest first. An arrival with every worker busy waits in the client's queue, its
    arrival time kept, so the offered rate is never silently lowered: the wait shows as
    client-side queueing, not as a slower schedule. A conversation holds its worker through its
    turns and think times, as one user would."""
    assert spec.arrivals is not None
    plan = schedule(spec.arrivals, len(chains))
    waiting: asyncio.Queue[tuple[_Chain, float] | None] = asyncio.Queue()
    records: dict[int, RequestRecord] = {}
    claimed = queued_max = 0  # claimed: arrivals not yet finished, waiting or not
    departures: list[float] = []  # when each served arrival's last answer came
    start = time.perf_counter()

    async def arrive() -> None:
        nonlocal claimed, queued_max
        for chain, offset in zip(chains, plan.times, strict=True):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            claimed += 1
            queued_max = max(queued_max, claimed - spec.concurrency)
            waiting.put_nowait((chain, start + offset))
        for _ in range(spec.concurrency):
            waiting.put_nowait(None)

    async def worker() -> None:
        nonlocal claimed
        while (item := await waiting.get()) is not None:
            chain, first = item
            arrived: float | None = first
            ok = True
            for index, request, think_s in chain:
                if think_s > 0:
                    await asyncio.sleep(think_s)
                record = await send(index, request, arrived)
                arrived = None  # the arrival is the chain's first request's
                records[index] = record
                ok = ok and record.ok
                if on_record is not None:
                    on_record(record)
            if ok:
                departures.append(time.perf_counter())
            claimed -= 1

    async with asyncio.TaskGroup() as group:
        group.create_task(arrive())
        for _ in range(spec.concurrency):
            group.create_task(worker())
    wall_end = time.perf_counter()
    measured = tuple(records[i] for i in sorted(records))
    span = max(departures) - min(departures) if departures else 0.0
    counts = OpenLoopCounts(plan.offered_rate, plan.window_s, len(departures), queued_max, span)
    return LoadResult(measured, warmup, start, wall_end, counts)


async def _request(
    pool: ConnectionPool,
    spec: LoadSpec,
    index: int,
    request: bytes | None = None,
    arrived: float | None = None,
) -> RequestRecord:
    start = time.perf_counter()
    retries = 0
    attempt = await _attempt(pool, spec, request)
    while attempt.status == 503 and retries < spec.max_retries:
        retries += 1
        await asyncio.sleep(spec.retry_delay_s)
        attempt = await _attempt(pool, spec, request)
    times = attempt.chunk_times
    counts = attempt.counts
    return RequestRecord(
        index=index,
        start=start,
        end=time.perf_counter(),
        status=attempt.status,
        output_tokens=counts.output_tokens,
        prompt_tokens=counts.prompt_tokens,
        first_token=times[0] if times else None,
        chunk_times=times,
        retries=retries,
        error=attempt.error,
        cached_tokens=counts.cached_tokens,
        prefill_tokens=counts.prefill_tokens,
        prefill_ms=counts.prefill_ms,
        decode_ms=counts.decode_ms,
        arrived=arrived,
    )


async def _attempt(pool: ConnectionPool, spec: LoadSpec, request: bytes | None) -> _Attempt:
    """One POST (`request`, else the pool's own), its failure reduced to a short kind so a
    sweep keeps going past it."""
    reader = _StreamReader(spec.api) if spec.stream else _BodyReader(spec.api)
    try:
        stall = spec.stall_s if spec.stream else None  # a whole JSON reply comes in one piece
        status = await pool.post(reader.feed, spec.timeout_s, request, stall)
    except StallError:  # before TimeoutError, which it is
        return _Attempt(None, "stalled")
    except TimeoutError:  # before OSError, which it is
        return _Attempt(None, "timeout")
    except ssl.SSLCertVerificationError:  # also an OSError, but the fix is the user's trust store
        return _Attempt(None, "tls_certificate")
    except (OSError, httptools.HttpParserError):
        return _Attempt(None, "connection")
    if not 200 <= status < 300:
        return _Attempt(status, f"http_{status}")
    return reader.result(status)


class _BodyReader:
    """A whole JSON response; llama-server's reply usually arrives in one piece."""

    __slots__ = ("_api", "_chunks")

    def __init__(self, api: Api) -> None:
        self._api = api
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)

    def result(self, status: int) -> _Attempt:
        try:
            counts = _counts(self._api, _json_object(b"".join(self._chunks)))
        except (ValueError, TypeError, KeyError, AttributeError):  # malformed JSON or shape
            counts = None
        if counts is None:
            return _Attempt(status, "bad_response")
        return _Attempt(status, None, counts)


_EVENT_GAP = b"\n\ndata: "  # between two events as llama-server writes them


class _StreamReader:
    """Server-sent events parsed as bytes as they arrive, inside the socket's callback.

    Each content-bearing event is timed at the arrival of the bytes that completed it; the
    server's count is taken from the last event that has one (the final one), falling back to
    the number of content events. A malformed event spoils the attempt, yet the stream is read
    to its end so the connection can be reused.

    Events come in the shape llama-server writes (`data: {json}` and a blank line), often many
    to a read on a fast server; those are parsed a whole read at a time (`_whole_events`), and
    anything else (CRLF, comments, other fields, `[DONE]`, an error) line by line."""

    __slots__ = ("_api", "_counts", "_error", "_rest", "_times")

    def __init__(self, api: Api) -> None:
        self._api = api
        self._times: list[float] = []
        self._counts: _Counts | None = None
        self._rest = b""
        self._error = False

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        buffer = self._rest + data if self._rest else data
        # One event a read (a server writing each token as it comes) is cheaper line by line;
        # several go to _whole_events, up to the end of the last whole one.
        first = buffer.find(b"\n\n")
        if 0 <= first < len(buffer) - 2:
            end = buffer.rfind(b"\n\n") + 2
            if end - 2 > first and self._whole_events(buffer[:end], now):
                self._rest = buffer[end:]
                return
        lines = buffer.split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self._line(line, now)

    def _whole_events(self, chunk: bytes, now: float) -> bool:
        """Whole `data: {json}` events, read with one orjson call for all of them: at
        4,096 streams, parsing each line on its own was most of the client's CPU. All or
        nothing: False (and nothing kept) when the chunk has any other shape, or something the
        line-by-line path must judge (a malformed or error event). A raw newline cannot occur
        inside JSON, so splitting on the blank lines between events is exact."""
        if self._error:
            return True  # spoiled already: the rest is read only to reuse the connection
        if not chunk.startswith(b"data: "):
            return False
        inner = chunk[6:-2].replace(_EVENT_GAP, b",")
        if b"\n" in inner:  # a newline not between two events: another shape
            return False
        events = 1 + (len(chunk) - 8 - len(inner)) // (len(_EVENT_GAP) - 1)
        try:
            parsed = orjson.loads(b"[" + inner + b"]")  # [DONE] fails here too
            # One object per event, none an error; C-level loops, no Python frame per token.
            if len(parsed) != events or set(map(type, parsed)) != {dict}:
                return False
            if any(map(dict.__contains__, parsed, repeat("error"))):
                return False
            if self._api == "completion":
                content = len([*filter(None, map(dict.get, parsed, repeat("content")))])
            else:
                content = sum(1 for event in parsed if _content("chat", event))
            # Only the last count is used: earlier ones (llama-server repeats the running count
            # in every event) are not converted, one call per token saved.
            counts = next(filter(None, map(partial(_counts, self._api), reversed(parsed))), None)
        except (ValueError, TypeError, KeyError, AttributeError):
            return False
        self._times += [now] * content  # one float, shared: no object per token
        self._counts = counts or self._counts
        return True

    def _line(self, line: bytes, now: float) -> None:
        if self._error or not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return
        try:
            event = _json_object(payload)
            if "error" in event:
                raise ValueError("the server reported an error")
            if _content(self._api, event):
                self._times.append(now)
            self._counts = _counts(self._api, event) or self._counts
        except (ValueError, TypeError, KeyError, AttributeError):
            self._error = True

    def result(self, status: int) -> _Attempt:
        if self._rest:  # what came after the last blank line: one or more lines
            now = time.perf_counter()
            for line in self._rest.split(b"\n"):
                self._line(line, now)
        if self._error:
            return _Attempt(status, "bad_response")
        counts = self._counts
        if counts is None:
            if not self._times:
                return _Attempt(status, "bad_response")
            counts = _Counts(len(self._times), 0)
        return _Attempt(status, None, counts, tuple(self._times))


def _json_object(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _content(api: Api, event: dict[str, Any]) -> bool:
    if api == "completion":
        return bool(event.get("content"))
    choices = event.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def _counts(api: Api, obj: dict[str, Any]) -> _Counts | None:
    """Tokens and phase times as the server counted them, or None when this object has none."""
    if api == "completion":
        if "tokens_predicted" not in obj:
            return None
        output, prompt = int(obj["tokens_predicted"]), int(obj.get("tokens_evaluated", 0))
        cached = None
    else:
        usage = obj.get("usage")
        if not usage:
            return None
        output, prompt = int(usage["completion_tokens"]), int(usage.get("prompt_tokens", 0))
        cached = _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
    timings = obj.get("timings")
    if not isinstance(timings, dict):
        return _Counts(output, prompt, cached)
    # `cache_n` (recent builds) is the server's own count; the OpenAI-style field its copy.
    cache_n = _int(timings.get("cache_n"))
    return _Counts(
        output,
        prompt,
        cached if cache_n is None else cache_n,
        _int(timings.get("prompt_n")),
        _float(timings.get("prompt_ms")),
        _float(timings.get("predicted_ms")),
    )


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
