"""The SSE reader fed hand-made reads: many events to a read (a fast server) parsed at once must
give exactly what the line-by-line path gives, and every odd shape still lands on that path."""

from __future__ import annotations

import json

import pytest

from tui_lab.engine.load.client import _Attempt, _BodyReader, _StreamReader


def sse(events: list[object], end: bytes = b"\n\n") -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + end for e in events)


def completion(n: int) -> list[object]:
    events: list[object] = [
        {"content": "t", "stop": False, "tokens_predicted": i} for i in range(n)
    ]
    events.append({"content": "", "stop": True, "tokens_predicted": n, "tokens_evaluated": 7})
    return events


def read(api: str, *reads: bytes) -> _Attempt:
    reader = _StreamReader(api)  # type: ignore[arg-type]
    for data in reads:
        reader.feed(data)
    return reader.result(200)


def figures(attempt: _Attempt) -> tuple[object, ...]:
    return (attempt.error, attempt.output_tokens, attempt.prompt_tokens, len(attempt.chunk_times))


def test_a_read_of_many_events_counts_as_reading_them_one_byte_at_a_time() -> None:
    stream = sse(completion(63))
    whole = read("completion", stream)
    bytewise = read("completion", *(stream[i : i + 1] for i in range(len(stream))))
    assert figures(whole) == figures(bytewise) == (None, 63, 7, 63)


def test_events_completed_by_a_later_read_carry_that_reads_time() -> None:
    stream = sse(completion(4))
    cut = stream.index(b"data: ", 1) + 3  # inside the second event
    attempt = read("completion", stream[:cut], stream[cut:])
    first, *rest = attempt.chunk_times
    assert len(rest) == 3 and all(t == rest[0] for t in rest) and first < rest[0]


@pytest.mark.parametrize(
    "bad",
    [
        b'data: {"error": {"code": 500, "message": "boom"}}\n\n',
        b'data: {"content": "t", "tok\n\n',  # malformed JSON
        b"data: [1, 2]\n\n",  # not an object
        b'data: {"content": "t"}, {"content": "u"}\n\n',  # two values in one event
    ],
)
def test_one_bad_event_among_many_in_a_read_spoils_the_attempt(bad: bytes) -> None:
    events = completion(5)
    stream = sse(events[:3]) + bad + sse(events[3:])
    assert read("completion", stream).error == "bad_response"


def test_the_count_comes_from_the_last_event_that_has_one_and_must_be_a_number() -> None:
    events = completion(5)
    events[-1] = {"content": "", "stop": True, "tokens_predicted": "many"}
    assert read("completion", sse(events)).error == "bad_response"
    events[-1] = {"content": "", "stop": True}  # the last count is then the previous event's
    assert figures(read("completion", sse(events))) == (None, 4, 0, 5)


def test_a_chat_stream_in_one_read_counts_usage_and_skips_empty_deltas_and_done() -> None:
    events: list[object] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": "t"}}]}] * 4
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    events.append({"choices": [], "usage": {"completion_tokens": 4, "prompt_tokens": 9}})
    stream = sse(events) + b"data: [DONE]\n\n"
    assert figures(read("chat", stream)) == (None, 4, 9, 4)
    assert figures(read("chat", sse(events))) == (None, 4, 9, 4)  # fast path, no [DONE]


def test_crlf_comments_and_a_missing_last_blank_line_are_still_read() -> None:
    stream = b": keep-alive\n\n" + sse(completion(3), end=b"\r\n\r\n")
    assert figures(read("completion", stream)) == (None, 3, 7, 3)
    unfinished = sse(completion(3))[:-1]  # the last event's blank line never came
    assert figures(read("completion", unfinished)) == (None, 3, 7, 3)


# The final objects as this repository's llama-server build writes them (trimmed), the second
# of two identical requests with cache_prompt on: 12 of 17 prompt tokens came from the cache.
TIMINGS = {"cache_n": 12, "prompt_n": 5, "prompt_ms": 158.947, "predicted_n": 8}
TIMINGS |= {"predicted_ms": 463.381, "prompt_per_second": 31.457}
COMPLETION_FINAL = {"content": "", "stop": True, "tokens_predicted": 8, "tokens_evaluated": 17}
COMPLETION_FINAL |= {"tokens_cached": 24, "timings": TIMINGS}
CHAT_USAGE = {"completion_tokens": 8, "prompt_tokens": 39, "total_tokens": 47}
CHAT_USAGE |= {"prompt_tokens_details": {"cached_tokens": 34}}
CHAT_TIMINGS = TIMINGS | {"cache_n": 34, "prompt_n": 5, "prompt_ms": 62.676}


def accounting(attempt: _Attempt) -> tuple[object, ...]:
    c = attempt.counts
    return (c.output_tokens, c.prompt_tokens, c.cached_tokens, c.prefill_tokens, c.prefill_ms,
            c.decode_ms)  # fmt: skip


def test_a_completion_streams_timings_read_raw_cache_n_not_tokens_cached() -> None:
    events = [*completion(8)[:-1], COMPLETION_FINAL]
    stream = sse(events)
    expected = (8, 17, 12, 5, 158.947, 463.381)
    assert accounting(read("completion", stream)) == expected
    bytewise = read("completion", *(stream[i : i + 1] for i in range(len(stream))))
    assert accounting(bytewise) == expected


def test_a_chat_stream_reads_timings_from_its_last_chunk() -> None:
    events: list[object] = [{"choices": [{"index": 0, "delta": {"content": "t"}}]}] * 8
    events.append({"choices": [], "usage": CHAT_USAGE, "timings": CHAT_TIMINGS})
    attempt = read("chat", sse(events) + b"data: [DONE]\n\n")
    assert accounting(attempt) == (8, 39, 34, 5, 62.676, 463.381)


def test_whole_bodies_of_both_apis_give_the_same_accounting() -> None:
    reader = _BodyReader("completion")
    reader.feed(json.dumps(COMPLETION_FINAL).encode())
    assert accounting(reader.result(200)) == (8, 17, 12, 5, 158.947, 463.381)
    reader = _BodyReader("chat")
    chat = {"choices": [{"message": {"content": "x"}}], "usage": CHAT_USAGE}
    reader.feed(json.dumps(chat | {"timings": CHAT_TIMINGS}).encode())
    assert accounting(reader.result(200)) == (8, 39, 34, 5, 62.676, 463.381)


def test_a_server_without_timings_leaves_them_unknown_not_zero() -> None:
    reader = _BodyReader("chat")
    chat = {"choices": [{"message": {"content": "x"}}], "usage": CHAT_USAGE}
    reader.feed(json.dumps(chat).encode())  # only the OpenAI-style cached count
    assert accounting(reader.result(200)) == (8, 39, 34, None, None, None)
    assert accounting(read("completion", sse(completion(3)))) == (3, 7, None, None, None, None)
