"""/metrics text as llama-server writes it, and shapes only the full exposition parser reads."""

from __future__ import annotations

import math

from tui_lab.engine.load.server_metrics import _parse_exposition, kv_cache_usage, parse_metrics

LLAMA_SERVER = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 290
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 1234
# HELP llamacpp:prompt_tokens_seconds Average prompt throughput in tokens/s.
# TYPE llamacpp:prompt_tokens_seconds gauge
llamacpp:prompt_tokens_seconds 915.25
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio NaN
"""


def test_llama_servers_lines_read_directly_match_the_exposition_parser() -> None:
    fast, full = parse_metrics(LLAMA_SERVER), _parse_exposition(LLAMA_SERVER)
    assert fast.keys() == full.keys()
    assert fast["llamacpp:tokens_predicted_total"] == 1234.0
    assert fast["llamacpp:prompt_tokens_seconds"] == 915.25
    assert math.isnan(fast["llamacpp:kv_cache_usage_ratio"])
    assert all(fast[k] == full[k] for k in fast if not math.isnan(full[k]))


def test_labels_or_timestamps_go_to_the_exposition_parser() -> None:
    text = (
        "# TYPE http_requests_total counter\n"
        'http_requests_total{code="200"} 7 1700000000000\n'
        "llamacpp:requests_processing 2 1700000000000\n"
    )
    assert parse_metrics(text) == {"http_requests_total": 7.0, "llamacpp:requests_processing": 2.0}


def test_kv_cache_use_is_read_where_exported_and_unknown_when_nan_or_absent() -> None:
    assert kv_cache_usage(parse_metrics(LLAMA_SERVER)) is None  # NaN before any request
    assert kv_cache_usage(parse_metrics("llamacpp:kv_cache_usage_ratio 0.375\n")) == 0.375
    # This repository's build exports no such gauge (its /metrics, trimmed):
    assert kv_cache_usage(parse_metrics("llamacpp:requests_deferred 0\n")) is None
