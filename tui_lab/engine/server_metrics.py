"""llama-server's own counters from `/metrics`, parsed with prometheus_client's parser.

The lab compares what its clients counted against what the servers counted, so a figure that
reaches the user is checked at its source.
"""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

TOKENS_PREDICTED = "llamacpp:tokens_predicted_total"


def parse_metrics(text: str) -> dict[str, float]:
    """Sample name -> value (llama-server exposes unlabelled samples only)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = sample.value
    return out


async def scrape(session: aiohttp.ClientSession, base_url: str) -> dict[str, float]:
    async with session.get(f"{base_url}/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        resp.raise_for_status()
        return parse_metrics(await resp.text())


async def tokens_predicted(session: aiohttp.ClientSession, base_url: str) -> int | None:
    """The server's count of generated tokens, or None when it cannot be read."""
    try:
        value = (await scrape(session, base_url)).get(TOKENS_PREDICTED)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return None if value is None else int(value)
