"""The load generator against an in-process fake llama-server: counts, failures, concurrency."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from itertools import pairwise

import pytest

from tests.fake_llama_server import FakeLlamaServer
from tui_lab.engine.load.client import DEFAULT_PROMPT, LoadSpec, RequestRecord, run_load


def spec(server: FakeLlamaServer, **kw: object) -> LoadSpec:
    fields: dict[str, object] = {"concurrency": 2, "requests": 4, "n_predict": 5}
    fields.update(kw)
    return LoadSpec(url=server.base_url, retry_delay_s=0.01, **fields)  # type: ignore[arg-type]


async def test_completion_counts_the_servers_tokens_and_sends_a_fair_body() -> None:
    async with FakeLlamaServer(prompt_tokens=9) as server:
        result = await run_load(spec(server))
    assert [r.index for r in result.records] == [0, 1, 2, 3]
    assert all(r.ok and r.status == 200 for r in result.records)
    assert all((r.output_tokens, r.prompt_tokens) == (5, 9) for r in result.records)
    assert all(r.first_token is None and r.chunk_times == () for r in result.records)
    assert server.bodies[0] == {
        "prompt": DEFAULT_PROMPT,
        "n_predict": 5,
        "temperature": 0.0,
        "ignore_eos": True,
        "cache_prompt": False,
        "stream": False,
    }
    assert result.wall_start <= min(r.start for r in result.records)
    assert result.wall_end >= max(r.end for r in result.records)


async def test_completion_stream_times_each_content_chunk() -> None:
    async with FakeLlamaServer(token_delay_s=0.01) as server:
        result = await run_load(spec(server, stream=True))
    for r in result.records:
        assert r.ok and r.output_tokens == 5
        assert len(r.chunk_times) == 5  # the final, empty, counting event is not content
        assert r.first_token == r.chunk_times[0]
        assert r.start < r.chunk_times[0] <= r.chunk_times[-1] <= r.end
        assert list(r.chunk_times) == sorted(r.chunk_times)


async def test_the_servers_timings_reach_each_record_and_missing_ones_stay_none() -> None:
    # The fake reports prompt_n and predicted_n only: no cache count, no phase times.
    async with FakeLlamaServer(prompt_tokens=9) as server:
        result = await run_load(spec(server, stream=True))
    for r in result.records:
        assert (r.prefill_tokens, r.cached_tokens, r.prefill_ms, r.decode_ms) == (
            9,
            None,
            None,
            None,
        )


async def test_chat_uses_usage_counts_and_max_tokens() -> None:
    async with FakeLlamaServer(prompt_tokens=11) as server:
        result = await run_load(spec(server, api="chat", n_predict=3))
    assert all((r.output_tokens, r.prompt_tokens) == (3, 11) for r in result.records)
    body = server.bodies[0]
    assert body["messages"] == [{"role": "user", "content": DEFAULT_PROMPT}]
    assert body["max_tokens"] == 3 and "stream_options" not in body


async def test_chat_stream_asks_for_usage_and_ignores_empty_deltas_and_done() -> None:
    async with FakeLlamaServer() as server:
        result = await run_load(spec(server, api="chat", stream=True, n_predict=4))
    assert server.bodies[0]["stream_options"] == {"include_usage": True}
    for r in result.records:
        assert r.ok and r.output_tokens == 4 and r.prompt_tokens == 7
        assert len(r.chunk_times) == 4


@pytest.mark.parametrize("api", ["completion", "chat"])
async def test_stream_without_a_count_falls_back_to_content_chunks(api: str) -> None:
    async with FakeLlamaServer(counts=False) as server:
        result = await run_load(spec(server, api=api, stream=True, requests=1))
    (r,) = result.records
    assert r.ok and r.output_tokens == 5 and r.prompt_tokens == 0


@pytest.mark.parametrize("api", ["completion", "chat"])
async def test_response_without_a_count_is_a_bad_response(api: str) -> None:
    async with FakeLlamaServer(counts=False) as server:
        result = await run_load(spec(server, api=api, requests=1))
    (r,) = result.records
    assert not r.ok and r.error == "bad_response" and r.status == 200
    assert r.output_tokens == 0


async def test_503_loading_is_retried_and_counted() -> None:
    async with FakeLlamaServer(fail_503=3) as server:
        result = await run_load(spec(server, concurrency=1, requests=1))
    (r,) = result.records
    assert r.ok and r.status == 200 and r.retries == 3 and r.output_tokens == 5
    assert len(server.bodies) == 4
    assert r.end - r.start >= 3 * 0.01  # retries count in the request's latency


async def test_503_beyond_max_retries_fails_as_http_503() -> None:
    async with FakeLlamaServer(fail_503=10) as server:
        result = await run_load(spec(server, concurrency=1, requests=1, max_retries=2))
    (r,) = result.records
    assert (r.error, r.status, r.retries) == ("http_503", 503, 2)
    assert len(server.bodies) == 3


async def test_500_is_an_error_and_not_retried() -> None:
    async with FakeLlamaServer(status=500) as server:
        result = await run_load(spec(server))
    assert all((r.error, r.status, r.retries) == ("http_500", 500, 0) for r in result.records)
    assert len(server.bodies) == 4


async def test_dropped_connection_is_a_connection_error() -> None:
    async with FakeLlamaServer(close=True) as server:
        result = await run_load(spec(server))
    assert all(r.error == "connection" and r.status is None for r in result.records)


async def test_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await run_load(
        LoadSpec(url=f"http://127.0.0.1:{port}", concurrency=2, requests=3, n_predict=1)
    )
    assert [r.error for r in result.records] == ["connection"] * 3


@pytest.mark.parametrize("stream", [False, True])
async def test_slow_response_times_out(stream: bool) -> None:
    # Streamed: the headers arrive at once, then tokens stall past the deadline.
    server = FakeLlamaServer(delay_s=0 if stream else 2.0, token_delay_s=2.0 if stream else 0)
    async with server:
        t0 = time.perf_counter()
        result = await run_load(spec(server, stream=stream, requests=2, timeout_s=0.2))
        elapsed = time.perf_counter() - t0
    assert all(r.error == "timeout" and r.output_tokens == 0 for r in result.records)
    assert elapsed < 1.5


async def test_warmup_requests_are_excluded_from_measured_records() -> None:
    seen: list[RequestRecord] = []
    async with FakeLlamaServer() as server:
        result = await run_load(spec(server, warmup=3, requests=5), on_record=seen.append)
    assert len(server.bodies) == 8
    assert len(result.warmup_records) == 3 and len(result.records) == 5
    assert sorted(r.index for r in seen) == [0, 1, 2, 3, 4]
    assert result.wall_start >= max(r.end for r in result.warmup_records)


async def test_api_key_is_sent_as_bearer_token() -> None:
    async with FakeLlamaServer() as server:
        await run_load(spec(server, requests=1, api_key="s3cret"))
        await run_load(spec(server, requests=1))
    assert server.auth == ["Bearer s3cret", None]


async def test_concurrency_never_exceeds_the_number_of_clients() -> None:
    async with FakeLlamaServer(delay_s=0.05) as server:
        result = await run_load(spec(server, concurrency=3, requests=12))
    assert server.max_in_flight == 3
    assert len(result.records) == 12


async def test_256_clients_hold_256_requests_in_flight_and_finish_quickly() -> None:
    async with FakeLlamaServer(delay_s=0.5) as server:
        t0 = time.perf_counter()
        result = await run_load(spec(server, concurrency=256, requests=512, n_predict=2))
        elapsed = time.perf_counter() - t0
    assert server.max_in_flight == 256
    assert len(result.records) == 512 and all(r.ok for r in result.records)
    assert sum(r.output_tokens for r in result.records) == 1024
    assert elapsed < 15


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request off a raw socket: its head, then Content-Length bytes of body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def _response(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


async def test_a_kept_alive_connection_the_server_dropped_is_reopened_not_failed() -> None:
    # Each connection answers one request, then takes the next one and closes unanswered:
    # what a server's idle keep-alive timeout does to a request sent at the wrong moment.
    connections = 0
    body = json.dumps({"content": "x", "tokens_predicted": 5, "tokens_evaluated": 3}).encode()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(_response(body))
        await writer.drain()
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await run_load(
            LoadSpec(url=f"http://127.0.0.1:{port}", concurrency=1, requests=3, n_predict=5)
        )
    assert [(r.ok, r.output_tokens, r.retries) for r in result.records] == [(True, 5, 0)] * 3
    assert connections == 3


async def test_events_split_anywhere_across_reads_are_parsed_whole() -> None:
    events = [{"content": "a", "tokens_predicted": 1}, {"content": "b", "tokens_predicted": 2}]
    events.append({"content": "", "stop": True, "tokens_predicted": 2, "tokens_evaluated": 4})
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    first = len(stream.split(b"\r\n\r\n")[0])
    # Inside "data:", inside the JSON, between CR and LF, then the rest of event 2 apart.
    cuts = [3, 9, first + 1, first + 20, len(stream) - 1]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        whole = _response(stream, b"text/event-stream")
        head = len(whole) - len(stream)
        for a, b in pairwise([0, head + cuts[0], *(head + c for c in cuts[1:]), len(whole)]):
            await asyncio.sleep(0.02)
            writer.write(whole[a:b])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        spec = LoadSpec(
            url=f"http://127.0.0.1:{port}", concurrency=1, requests=1, n_predict=2, stream=True
        )
        (r,) = (await run_load(spec)).records
    assert r.ok and (r.output_tokens, r.prompt_tokens) == (2, 4)
    assert len(r.chunk_times) == 2 and r.chunk_times[0] < r.chunk_times[1]


async def test_a_stream_that_goes_silent_ends_as_stalled_long_before_the_request_timeout() -> None:
    """A server frozen mid-stream (SIGSTOP): no byte for `stall_s` ends the request."""
    async with FakeLlamaServer(token_delay_s=5.0) as server:
        started = time.monotonic()
        result = await run_load(
            spec(server, stream=True, requests=1, concurrency=1, n_predict=4, stall_s=0.3)
        )
        took = time.monotonic() - started
    assert [r.error for r in result.records] == ["stalled"]
    assert took < 3.0  # the first token's gap is 5 s, the request timeout 600 s


async def test_a_steady_stream_longer_than_the_stall_limit_is_not_cut() -> None:
    async with FakeLlamaServer(token_delay_s=0.05) as server:
        result = await run_load(
            spec(server, stream=True, requests=2, concurrency=1, n_predict=16, stall_s=0.3)
        )
    assert [r.error for r in result.records] == [None, None]
    assert all(r.output_tokens == 16 for r in result.records)
