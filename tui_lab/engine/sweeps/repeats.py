"""A cell measured several times, as one row: each figure the mean of its measurements, the
throughput's measurements kept with their 95 % interval.

One row per cell, written once its last measurement is in, keeps every reader of the results
(ranking, the results screen, `analyze`, `sweep resume`) on the rule they already follow: a row
is a finished cell. The price is that a sweep interrupted mid-pass measures its unfinished cells
again from the first pass when resumed; what is on disk is always whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from statistics import fmean
from types import MappingProxyType

from tui_lab.engine.load.stats import Percentiles, RunSummary
from tui_lab.engine.results.intervals import run_columns

Measured = tuple[RunSummary, dict[str, object]]  # one measurement's figures and its row


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return fmean(known) if known else None


def _most(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _total(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def mean_summary(summaries: Sequence[RunSummary]) -> RunSummary:
    """Counts summed over the measurements, rates and latency percentiles averaged: a p99 of
    the mean measurement, not a p99 over the pooled requests (which would need every record
    of every pass kept until the last)."""
    errors: Counter[str] = Counter()
    for summary in summaries:
        errors.update(summary.errors)

    def points(name: str) -> Percentiles:
        each = [getattr(s, name) for s in summaries]
        return Percentiles(
            *(_mean([getattr(p, f.name) for p in each]) for f in fields(Percentiles))
        )

    return RunSummary(
        requests_ok=sum(s.requests_ok for s in summaries),
        requests_failed=sum(s.requests_failed for s in summaries),
        retries=sum(s.retries for s in summaries),
        output_tokens=sum(s.output_tokens for s in summaries),
        prompt_tokens=sum(s.prompt_tokens for s in summaries),
        wall_s=sum(s.wall_s for s in summaries),
        output_tok_per_s=fmean(s.output_tok_per_s for s in summaries),
        requests_per_s=fmean(s.requests_per_s for s in summaries),
        cached_prompt_tokens=_total([s.cached_prompt_tokens for s in summaries]),
        cache_hit_rate=_mean([s.cache_hit_rate for s in summaries]),
        prefill_tok_per_s=_mean([s.prefill_tok_per_s for s in summaries]),
        decode_tok_per_s=_mean([s.decode_tok_per_s for s in summaries]),
        offered_rate=_mean([s.offered_rate for s in summaries]),
        achieved_rate=_mean([s.achieved_rate for s in summaries]),
        client_queue_max=_most([s.client_queue_max for s in summaries]),
        client_wait_ms_p99=_mean([s.client_wait_ms_p99 for s in summaries]),
        ttft_ms=points("ttft_ms"),
        tpot_ms=points("tpot_ms"),
        itl_ms=points("itl_ms"),
        e2el_ms=points("e2el_ms"),
        errors=MappingProxyType(dict(errors)),
    )


def combine(measured: Sequence[Measured]) -> Measured:
    """One row of a cell's successful measurements (in the order taken): the first's
    coordinates, the mean figures, the servers' tokens and the GPUs' energy summed."""
    if len(measured) == 1:
        return measured[0]
    summaries = [summary for summary, _ in measured]
    rows = [row for _, row in measured]
    summary = mean_summary(summaries)
    row = {**rows[0], **summary.to_flat_dict()}
    row["server_output_tokens"] = _total([r["server_output_tokens"] for r in rows])  # type: ignore[misc]
    row["instance_output_tokens"] = _instance_tokens([r["instance_output_tokens"] for r in rows])
    row.update(_energy(rows, summary.output_tokens))
    row["deferred_max"] = _most([r.get("deferred_max") for r in rows])  # type: ignore[misc]
    row.update(run_columns([s.output_tok_per_s for s in summaries]))
    return summary, row


def _energy(rows: Sequence[dict[str, object]], tokens: int) -> dict[str, object]:
    """The energy of all the measurements, unknown when any one's is (and why)."""
    each = [r["energy_j"] for r in rows]
    known = [float(e) for e in each if isinstance(e, float | int)]
    if len(known) < len(each):
        reason = next(r["energy_reason"] for r in rows if r["energy_j"] is None)
        return {"energy_j": None, "joules_per_token": None, "energy_reason": reason}
    joules = sum(known)
    if not tokens:
        return {
            "energy_j": joules,
            "joules_per_token": None,
            "energy_reason": rows[0]["energy_reason"],
        }
    return {"energy_j": joules, "joules_per_token": joules / tokens, "energy_reason": None}


def _instance_tokens(each: Sequence[object]) -> str | None:
    """Per instance, summed over the measurements: "a;b" columns added position by position."""
    if any(not isinstance(v, str) for v in each):
        return None
    split = [[int(t) for t in str(v).split(";")] for v in each]
    return ";".join(str(sum(column)) for column in zip(*split, strict=True))
