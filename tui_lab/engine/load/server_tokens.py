"""The server's own tokens of a long seeded word sequence, from its `/tokenize`.

A workload's "2,000-token prompt" must be 2,000 tokens of the model being measured, not of some
other tokenizer: the pieces the server splits the text into are joined back to exact lengths
(workloads.Filler). One call per cell, before the measured load.
"""

from __future__ import annotations

import random

import aiohttp

from tui_lab.engine.errors import LabError
from tui_lab.engine.load.server_metrics import auth_headers
from tui_lab.engine.load.workloads import Filler

# Common English words: most are one token with their leading space in any model's vocabulary,
# and a seeded shuffle of them reads as no two requests alike.
_WORDS = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death "
    "experience effect use class control care field development role effort rate heart drug "
    "show leader light voice wife police mind price report decision son view relationship town "
    "road arm difference value building action model season society tax director position"
)
WORDS = tuple(_WORDS.split())


async def filler(
    session: aiohttp.ClientSession, url: str, tokens: int, seed: int, api_key: str | None
) -> Filler:
    """At least `tokens` of the server's pieces; the text grows until the server counts enough."""
    rng = random.Random(seed)
    words = max(64, tokens + tokens // 4)
    for _ in range(4):
        text = "".join(" " + rng.choice(WORDS) for _ in range(words))
        pieces = await _pieces(session, url, text, api_key)
        if len(pieces) >= tokens:
            return Filler(pieces)
        words *= 2
    raise LabError(f"{url}/tokenize: gave {len(pieces)} tokens for {words // 2} words")


async def _pieces(
    session: aiohttp.ClientSession, url: str, text: str, api_key: str | None
) -> list[str]:
    """Each token's text; a piece that is not whole UTF-8 on its own (bytes) ends the run, so
    joined pieces always decode."""
    try:
        async with session.post(
            f"{url}/tokenize",
            json={"content": text, "with_pieces": True},
            headers=auth_headers(api_key),
            timeout=aiohttp.ClientTimeout(total=60),
        ) as resp:
            resp.raise_for_status()
            tokens = (await resp.json())["tokens"]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
        raise LabError(f"{url}/tokenize: {exc or type(exc).__name__}") from None
    pieces: list[str] = []
    for token in tokens:
        piece = token.get("piece") if isinstance(token, dict) else None
        if not isinstance(piece, str):
            break
        pieces.append(piece)
    return pieces
