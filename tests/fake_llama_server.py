"""An in-process stand-in for llama-server's completion endpoints, with failures on demand.

The load generator's error handling and bookkeeping are tested against this instead of a real
server: a real one cannot be told to answer 503 three times, drop a connection or stall, and
it takes seconds to start where this takes milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

TOKEN = "tok"  # the content of every generated token


class FakeLlamaServer:
    """Serves /completion and /v1/chat/completions on 127.0.0.1, on a free port.

    Each request generates exactly n_predict (or max_tokens) tokens of `TOKEN`. Behaviour knobs:
    `fail_503` answers the first N requests with llama-server's "Loading model" 503; `status`
    answers every request with that status; `close` drops the connection without answering;
    `delay_s` waits before answering; `token_delay_s` waits between streamed tokens;
    `counts=False` leaves the token counts out of responses. It records the bodies and
    Authorization headers it received and the most requests it ever held at once.

    /metrics and /slots answer as llama-server's do (the counters the telemetry reads), so
    the collector can be measured against many of these: `slots` is how many /slots lists,
    busy while requests are in flight.
    """

    def __init__(
        self,
        *,
        fail_503: int = 0,
        status: int = 200,
        close: bool = False,
        delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        counts: bool = True,
        prompt_tokens: int = 7,
        slots: int = 1,
    ) -> None:
        self.fail_503 = fail_503
        self.status = status
        self.close = close
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s
        self.counts = counts
        self.prompt_tokens = prompt_tokens
        self.slots = slots
        self.tokens_predicted = 0  # finished requests' tokens, as llama-server counts them
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.sessions: list[str | None] = []  # each request's X-Session-Id
        self.in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/completion", self._handle)
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/slots", self._slots)
        app.router.add_get("/health", self._health)
        # Like llama-server, stop working on a request whose client hung up (a timed-out one),
        # so stop() does not wait for handlers nobody is listening to.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        # A deep backlog, so hundreds of clients connecting at once are not refused or delayed.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("Authorization"))
        self.sessions.append(request.headers.get("X-Session-Id"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = await self._answer(request, body)
        finally:
            self.in_flight -= 1
        if answer.status == 200:
            self.tokens_predicted += body.get("max_tokens") or body.get("n_predict") or 0
        return answer

    async def _metrics(self, _: web.Request) -> web.Response:
        busy = min(self.in_flight, self.slots)
        lines = [
            "# TYPE llamacpp:tokens_predicted_total counter",
            f"llamacpp:tokens_predicted_total {self.tokens_predicted}",
            "# TYPE llamacpp:requests_processing gauge",
            f"llamacpp:requests_processing {busy}",
            "# TYPE llamacpp:requests_deferred gauge",
            f"llamacpp:requests_deferred {self.in_flight - busy}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _slots(self, _: web.Request) -> web.Response:
        busy = min(self.in_flight, self.slots)
        slots = [
            {"id": i, "is_processing": i < busy, "next_token": [{"n_decoded": 0}]}
            for i in range(self.slots)
        ]
        return web.json_response(slots)

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.fail_503 > 0:
            self.fail_503 -= 1
            return _error(503, "Loading model", "unavailable_error")
        if self.status != 200:
            return _error(self.status, "boom", "server_error")
        await asyncio.sleep(self.delay_s)
        if self.close:
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped on purpose")
        chat = request.path == "/v1/chat/completions"
        n = body["max_tokens"] if chat else body["n_predict"]
        if body.get("stream"):
            return await self._stream(request, chat, n, body)
        if chat:
            answer: dict[str, Any] = {
                "choices": [{"message": {"role": "assistant", "content": TOKEN * n}}]
            }
            if self.counts:
                answer["usage"] = self._usage(n)
        else:
            answer = {"content": TOKEN * n, "stop": True}
            if self.counts:
                answer |= self._completion_counts(n)
        return web.json_response(answer)

    async def _stream(
        self, request: web.Request, chat: bool, n: int, body: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(event: object) -> None:
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")

        if chat:
            await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]})
        for i in range(n):
            if i:
                await asyncio.sleep(self.token_delay_s)
            if chat:
                await send({"choices": [{"index": 0, "delta": {"content": TOKEN}}]})
            else:
                await send({"content": TOKEN, "stop": False})
        if chat:
            await send({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            if self.counts and body.get("stream_options", {}).get("include_usage"):
                await send({"choices": [], "usage": self._usage(n)})
            await resp.write(b"data: [DONE]\n\n")
        else:
            final: dict[str, Any] = {"content": "", "stop": True}
            if self.counts:
                final |= self._completion_counts(n)
            await send(final)
        await resp.write_eof()
        return resp

    def _usage(self, n: int) -> dict[str, int]:
        return {
            "completion_tokens": n,
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": n + self.prompt_tokens,
        }

    def _completion_counts(self, n: int) -> dict[str, Any]:
        return {
            "tokens_predicted": n,
            "tokens_evaluated": self.prompt_tokens,
            "timings": {"predicted_n": n, "prompt_n": self.prompt_tokens},
        }


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"code": status, "message": message, "type": kind}}, status=status
    )
