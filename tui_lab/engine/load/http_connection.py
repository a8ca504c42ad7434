"""Keep-alive HTTP/1.1 connections for the load generator, one request at a time each.

Why not aiohttp here: profiling 1024 clients against a canned nginx showed aiohttp's per-request
machinery (request and response objects, header multidicts, stream readers, timers) taking about
80% of the client's CPU, capping one core near 3,000-5,000 requests/s; the client would then be
what a user measures on a fast server. The load path needs one thing: POST a prebuilt request on
an open connection and hand the body bytes, as they arrive, to a callback. An asyncio protocol
with llhttp (`httptools`, the parser uvicorn uses; chunked and Content-Length bodies) does that
at a small fraction of the cost. The rest of the engine (metrics, health) keeps aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

BodyCallback = Callable[[bytes], None]


def _ignore(_: bytes) -> None:
    pass


@dataclass(frozen=True)
class Target:
    """Where requests go, with the request bytes built once for every request to send."""

    host: str
    port: int
    tls: ssl.SSLContext | None  # one context for every connection: loading CAs takes ms
    request: bytes  # the whole POST: head and body

    @classmethod
    def post(cls, url: str, body: bytes, headers: dict[str, str]) -> Target:
        parts = urlsplit(url)
        tls = ssl.create_default_context() if parts.scheme == "https" else None
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {parts.netloc}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return cls(host, port, tls, head + body)


class StallError(TimeoutError):
    """A response that had begun went silent for longer than its stall limit."""


class HttpConnection(asyncio.Protocol):
    """One TCP connection; `send` resolves to the status once the whole response was read.

    Errors reach the caller as exceptions of the pending `send`: `ConnectionError` when the
    peer closes or resets, `httptools.HttpParserError` for a malformed response.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None
        self._on_body: BodyCallback = _ignore
        self._timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_s: float | None = None
        self._last_byte = 0.0
        self.open = False
        self.keep_alive = True
        self.received = False  # any byte of the current response arrived

    @classmethod
    async def connect(cls, target: Target) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, target.host, target.port, ssl=target.tls)
        return conn

    @property
    def reusable(self) -> bool:
        return self.open and self.keep_alive and self._waiter is None

    def send(
        self,
        request: bytes,
        on_body: BodyCallback,
        deadline: float,
        stall_s: float | None = None,
    ) -> asyncio.Future[int]:
        """Write the request; past `deadline` (loop time) the connection is dropped and the
        future fails with TimeoutError. A timer handle, not `asyncio.timeout`, which cost a
        quarter of the client's CPU.

        `stall_s`: once the response body has begun, no byte for that long fails it with
        StallError (a server frozen mid-stream). Before the body's first byte the prefill may
        rightly take long, so only the deadline holds there. The stall timer is not re-armed per
        chunk: it fires once per `stall_s` and looks at when the last byte came."""
        assert self._transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._timer = loop.call_at(deadline, self._timed_out)
        self._stall_s = stall_s
        self._on_body = on_body
        self.received = False
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        """Drop the connection now (also mid-response: a timeout or a cancelled run)."""
        self.open = False
        self._disarm()
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(ConnectionError(str(exc) if exc else "server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self._stall_s is not None:  # from the first byte of the body: headers may come early
            loop = asyncio.get_running_loop()
            self._last_byte = loop.time()
            if self._stall_timer is None:
                self._stall_timer = loop.call_later(self._stall_s, self._check_stall)
        self._on_body(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        self._disarm()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self._parser.get_status_code())

    def _timed_out(self) -> None:
        self._fail(TimeoutError())
        self.close()

    def _check_stall(self) -> None:
        assert self._stall_s is not None
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._last_byte
        if quiet < self._stall_s:
            self._stall_timer = loop.call_later(self._stall_s - quiet, self._check_stall)
            return
        self._stall_timer = None
        self._fail(StallError())
        self.close()

    def _fail(self, exc: Exception) -> None:
        self._disarm()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _disarm(self) -> None:
        self._on_body = _ignore
        self._stall_s = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None


class ConnectionPool:
    """Idle connections kept between requests (and between the warm-up and measured phases)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._idle: list[HttpConnection] = []

    async def post(
        self,
        on_body: BodyCallback,
        timeout_s: float,
        request: bytes | None = None,
        stall_s: float | None = None,
    ) -> int:
        """Send `request` (to the target's host; else the target's own request); its status
        once the whole response was read.

        Raises TimeoutError past `timeout_s` (connecting included), StallError (a TimeoutError)
        when a begun response is silent for `stall_s`, OSError (ConnectionError
        among them) or httptools.HttpParserError. A kept-alive connection the server closed
        while idle fails before any byte of a response arrives; that request never reached the
        server, so it is sent once more on a new connection rather than reported."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        request = self.target.request if request is None else request
        conn = self._take_idle()
        reused = conn is not None
        if conn is None:
            conn = await self._connect(deadline)
        try:
            try:
                return await conn.send(request, on_body, deadline, stall_s)
            except ConnectionError:
                if not reused or conn.received:
                    raise
                conn = await self._connect(deadline)
                return await conn.send(request, on_body, deadline, stall_s)
        finally:
            self.release(conn)

    def _take_idle(self) -> HttpConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
        return None

    async def _connect(self, deadline: float) -> HttpConnection:
        async with asyncio.timeout_at(deadline):
            return await HttpConnection.connect(self.target)

    def release(self, conn: HttpConnection) -> None:
        if conn.reusable:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
