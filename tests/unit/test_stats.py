"""Figures from hand-made records whose answers are worked out by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tui_lab.engine.load.client import LoadResult, RequestRecord
from tui_lab.engine.load.stats import (
    Percentiles,
    RunSummary,
    percentiles,
    summarize,
    summarize_load,
)


def rec(
    start: float = 0.0,
    end: float = 1.0,
    out: int = 10,
    prompt: int = 5,
    chunks: tuple[float, ...] = (),
    error: str | None = None,
    retries: int = 0,
    index: int = 0,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        start=start,
        end=end,
        status=200 if error is None else 500,
        output_tokens=0 if error else out,
        prompt_tokens=0 if error else prompt,
        first_token=chunks[0] if chunks else None,
        chunk_times=chunks,
        retries=retries,
        error=error,
    )


def test_percentiles_interpolate_linearly_like_numpy() -> None:
    # numpy.percentile([1, 2, 3, 4], [50, 90, 99]) == [2.5, 3.7, 3.97]
    p = percentiles([4.0, 1.0, 3.0, 2.0])
    assert p.p50 == pytest.approx(2.5)
    assert p.p90 == pytest.approx(3.7)
    assert p.p99 == pytest.approx(3.97)
    assert p.mean == pytest.approx(2.5)


def test_percentiles_of_one_value_are_that_value() -> None:
    assert percentiles([7.0]) == Percentiles(7.0, 7.0, 7.0, 7.0)


def test_percentiles_of_nothing_are_none() -> None:
    assert percentiles([]) == Percentiles(None, None, None, None)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200))
def test_percentiles_are_ordered_and_within_range(values: list[float]) -> None:
    p = percentiles(values)
    assert p.p50 is not None and p.p90 is not None and p.p99 is not None and p.mean is not None
    lo, hi = min(values), max(values)
    tol = 1e-9 * max(1.0, abs(lo), abs(hi))
    assert lo - tol <= p.p50 <= p.p90 + tol
    assert p.p90 <= p.p99 + tol
    assert p.p99 <= hi + tol
    assert lo - tol <= p.mean <= hi + tol


def test_ttft_tpot_follow_vllm_definitions() -> None:
    # TTFT 0.2 s; TPOT = (1.2 - 0.2) / (5 - 1) = 0.25 s
    summary = summarize([rec(start=10.0, end=11.2, out=5, chunks=(10.2, 10.5, 11.2))], 1.2)
    assert summary.ttft_ms.p50 == pytest.approx(200.0)
    assert summary.tpot_ms.p50 == pytest.approx(250.0)
    assert summary.e2el_ms.p50 == pytest.approx(1200.0)


def test_tpot_skips_requests_with_a_single_token() -> None:
    summary = summarize([rec(end=0.5, out=1, chunks=(0.5,))], 1.0)
    assert summary.ttft_ms.p50 == pytest.approx(500.0)
    assert summary.tpot_ms == Percentiles(None, None, None, None)


def test_itl_pools_every_gap_of_every_request() -> None:
    records = [
        rec(start=0.0, end=0.6, out=3, chunks=(0.1, 0.3, 0.6)),  # gaps 0.2, 0.3
        rec(start=0.0, end=0.5, out=2, chunks=(0.1, 0.5)),  # gap 0.4
    ]
    itl = summarize(records, 1.0).itl_ms
    assert itl.mean == pytest.approx(300.0)
    assert itl.p50 == pytest.approx(300.0)
    assert itl.p90 == pytest.approx(380.0)


def test_failed_requests_are_counted_but_add_no_tokens_or_latency() -> None:
    records = [
        rec(end=1.0, out=10, prompt=5, retries=2),
        rec(end=3.0, out=10, prompt=5),
        rec(end=9.0, error="http_500"),
        rec(end=9.0, error="timeout", retries=1),
        rec(end=9.0, error="timeout"),
    ]
    summary = summarize(records, 4.0)
    assert (summary.requests_ok, summary.requests_failed, summary.retries) == (2, 3, 3)
    assert (summary.output_tokens, summary.prompt_tokens) == (20, 10)
    assert summary.output_tok_per_s == pytest.approx(5.0)
    assert summary.requests_per_s == pytest.approx(0.5)
    assert summary.e2el_ms.p50 == pytest.approx(2000.0)
    assert dict(summary.errors) == {"http_500": 1, "timeout": 2}


def test_non_streaming_records_have_no_ttft_tpot_or_itl() -> None:
    summary = summarize([rec(end=2.0), rec(end=4.0)], 4.0)
    empty = Percentiles(None, None, None, None)
    assert summary.ttft_ms == summary.tpot_ms == summary.itl_ms == empty
    assert summary.e2el_ms.mean == pytest.approx(3000.0)


def test_no_records_summarize_to_zeros_without_dividing_by_zero() -> None:
    summary = summarize([], 0.0)
    assert (summary.requests_ok, summary.requests_failed, summary.output_tokens) == (0, 0, 0)
    assert summary.output_tok_per_s == 0.0 and summary.requests_per_s == 0.0
    assert summary.to_flat_dict()["errors"] == ""


def test_summarize_load_uses_the_measured_wall_time() -> None:
    result = LoadResult((rec(end=1.0, out=8),), (rec(end=1.0, out=100),), 10.0, 12.0)
    summary = summarize_load(result)
    assert summary.wall_s == pytest.approx(2.0)
    assert summary.output_tok_per_s == pytest.approx(4.0)


def test_flat_dict_has_every_flat_key_in_order_and_sorted_errors() -> None:
    summary = summarize([rec(), rec(error="timeout"), rec(error="http_500")], 1.0)
    flat = summary.to_flat_dict()
    assert tuple(flat) == RunSummary.flat_keys()
    assert flat["ttft_ms_p50"] is None and flat["e2el_ms_p99"] == pytest.approx(1000.0)
    assert flat["errors"] == "http_500:1;timeout:1"


def test_json_dict_nests_latencies_and_errors() -> None:
    summary = summarize([rec(chunks=(0.1, 1.0)), rec(error="timeout")], 1.0)
    out = summary.to_json_dict()
    assert out["ttft_ms"] == {
        "p50": pytest.approx(100.0),
        "p90": pytest.approx(100.0),
        "p99": pytest.approx(100.0),
        "mean": pytest.approx(100.0),
    }
    assert out["errors"] == {"timeout": 1}
    assert out["requests_ok"] == 1 and "itl_ms_p50" in out


def test_errors_cannot_be_changed_after_the_fact() -> None:
    summary = summarize([rec(error="timeout")], 1.0)
    with pytest.raises(TypeError):
        summary.errors["timeout"] = 5  # type: ignore[index]


def cached(
    r: RequestRecord, hits: int, evaluated: int, prefill_ms: float, decode_ms: float
) -> RequestRecord:
    return replace(
        r, cached_tokens=hits, prefill_tokens=evaluated, prefill_ms=prefill_ms, decode_ms=decode_ms
    )


def test_cache_and_phase_figures_from_the_servers_accounting() -> None:
    # 100 prompt tokens, 75 of them cached: 25 evaluated in 50 ms; then 40 prompt tokens, none
    # cached, all 40 evaluated in 150 ms. Decode: 10 tokens in 100 ms, 10 in 400 ms.
    first = cached(rec(out=10, prompt=100), 75, 25, 50.0, 100.0)
    second = cached(rec(out=10, prompt=40), 0, 40, 150.0, 400.0)
    s = summarize([first, second, rec(error="timeout")], wall_s=1.0)
    assert s.cached_prompt_tokens == 75
    assert s.cache_hit_rate == pytest.approx(75 / 140)
    assert s.prefill_tok_per_s == pytest.approx(65 / 0.2)  # 65 tokens in 200 ms
    assert s.decode_tok_per_s == pytest.approx(20 / 0.5)
    flat = s.to_flat_dict()
    assert flat["cache_hit_rate"] == s.cache_hit_rate and "decode_tok_per_s" in flat
    assert set(RunSummary.flat_keys()) == set(flat)


def test_a_server_that_reports_no_accounting_gives_none_not_zero() -> None:
    s = summarize([rec(), rec(index=1)], wall_s=1.0)
    assert (s.cached_prompt_tokens, s.cache_hit_rate) == (None, None)
    assert (s.prefill_tok_per_s, s.decode_tok_per_s) == (None, None)
    # Only the requests that report a cache count enter its rate.
    s = summarize([cached(rec(prompt=10), 5, 5, 10.0, 10.0), rec(prompt=90)], wall_s=1.0)
    assert s.cache_hit_rate == pytest.approx(0.5)
