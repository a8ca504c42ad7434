"""The answer of a sweep in words: the layout to run, what it gives in all and to each user,
and which cells these measurements cannot tell from it.

Written once here so the CLI, `analyze` and the results screen say the same sentence, e.g.
"2 instances x 16 slots, up to 64 clients: 138 tok/s in all (95 % CI 135-141 over 3 runs),
9 tok/s per user at p50, TTFT p99 420 ms".
"""

from __future__ import annotations

from collections.abc import Sequence

from tui_lab.engine.results.ranking import RANKED_BY, best_cell, interval_of, is_number, ties
from tui_lab.engine.results.reader import Row


def _plural(count: object, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def per_user_tok_per_s(row: Row) -> float | None:
    """One user's decode speed at the median: 1 / TPOT p50 when streamed, else a median
    request's tokens over its end-to-end latency (queueing included)."""
    tpot = row.get("tpot_ms_p50")
    if is_number(tpot) and float(tpot) > 0:  # type: ignore[arg-type]
        return 1000 / float(tpot)  # type: ignore[arg-type]
    e2el, tokens, ok = row.get("e2el_ms_p50"), row.get("output_tokens"), row.get("requests_ok")
    if is_number(e2el) and is_number(tokens) and is_number(ok) and ok and float(e2el) > 0:  # type: ignore[arg-type]
        return float(tokens) / float(ok) / (float(e2el) / 1000)  # type: ignore[arg-type]
    return None


def layout_words(row: Row) -> str:
    return (
        f"{_plural(row.get('instances'), 'instance', 'instances')} × "
        f"{_plural(row.get('parallel'), 'slot', 'slots')}, "
        f"up to {_plural(row.get('concurrency'), 'client', 'clients')}"
    )


def recommendation(rows: Sequence[Row]) -> str | None:
    """The best cell in one sentence (None when no cell ran cleanly), its ties after it."""
    best = best_cell(rows)
    if best is None:
        return None
    parts = [f"{float(best[RANKED_BY]):.0f} tok/s in all"]  # type: ignore[arg-type]
    span = interval_of(best)
    if span is not None and span.low is not None and span.high is not None:
        parts[0] += f" (95 % CI {span.low:.0f}-{span.high:.0f} over {span.n} runs)"
    user = per_user_tok_per_s(best)
    if user is not None:
        parts.append(f"{user:.0f} tok/s per user at p50")
    ttft, e2el = best.get("ttft_ms_p99"), best.get("e2el_ms_p99")
    if is_number(ttft):
        parts.append(f"TTFT p99 {float(ttft):.0f} ms")  # type: ignore[arg-type]
    elif is_number(e2el):
        parts.append(f"latency p99 {float(e2el):.0f} ms")  # type: ignore[arg-type]
    text = f"{layout_words(best)}: {', '.join(parts)}"
    tied = ties(rows)
    if tied:
        text += "; tied within the intervals: " + ", ".join(
            f"{r['instances']}×{r['parallel']} c={r['concurrency']} "
            f"({float(r[RANKED_BY]):.0f} tok/s)"  # type: ignore[arg-type]
            for r in tied
        )
    return text
