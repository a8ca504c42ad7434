"""llama-server's own counters from `/metrics`, parsed with prometheus_client's parser.

The lab compares what its clients counted against what the servers counted, so a figure that
reaches the user is checked at its source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

TOKENS_PREDICTED = "llamacpp:tokens_predicted_total"
REQUESTS_DEFERRED = "llamacpp:requests_deferred"  # waiting for a free slot, right now
# 1.0 = the whole KV cache in use. Builds of 2024 export it; later ones (this repository's
# included) dropped it with the KV-cache rework, so it is read where present, never made up.
KV_CACHE_USAGE = "llamacpp:kv_cache_usage_ratio"


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value. llama-server exposes unlabelled `name value` lines only, read here
    directly (3 us a scrape against 61 us for prometheus_client's parser on the test box, a
    cost the telemetry pays per instance every second). Any other line (labels, a timestamp)
    hands the whole text to that parser, which knows the full format."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or "{" in parts[0]:
            return _parse_exposition(text)
        try:
            out[parts[0]] = float(parts[1])
        except ValueError:
            return _parse_exposition(text)
    return out


def _parse_exposition(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = sample.value
    return out


def kv_cache_usage(metrics: Mapping[str, float]) -> float | None:
    """The share of the KV cache in use, or None: a build without the gauge, or one that
    writes NaN before its first request."""
    value = metrics.get(KV_CACHE_USAGE)
    return None if value is None or math.isnan(value) else value


def auth_headers(api_key: str | None) -> dict[str, str]:
    """llama-server started with --api-key guards /metrics and /slots too (only /health and
    the model list are public): without the key, every figure would silently be missing."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def scrape(
    session: aiohttp.ClientSession, base_url: str, api_key: str | None = None
) -> dict[str, float]:
    async with session.get(
        f"{base_url}/metrics",
        headers=auth_headers(api_key),
        timeout=aiohttp.ClientTimeout(total=5),
    ) as resp:
        resp.raise_for_status()
        return parse_metrics(await resp.text())


async def tokens_predicted(
    session: aiohttp.ClientSession, base_url: str, api_key: str | None = None
) -> int | None:
    """The server's count of generated tokens, or None when it cannot be read."""
    try:
        value = (await scrape(session, base_url, api_key)).get(TOKENS_PREDICTED)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return None if value is None else int(value)
