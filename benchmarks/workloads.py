"""Benchmark 7: session affinity against round robin, on multi-turn chats with the cache on.

Eight conversations of six turns, each turn sending its whole history after a shared 512-token
system prompt (user messages of 32 tokens, so the history is most of a prompt), streamed, on 2
instances of 8 slots behind nginx (a slot for every conversation wherever it lands), under
`--balance round_robin` and `--balance session` side by side. Each measurement starts fresh
servers (its own sweep), so one balancer never inherits the other's prompt cache; the two
alternate, so drift over the run spreads over both. The figures are the rows' own: cache hit
rate, prefill and output tok/s, TTFT.

    python -m benchmarks.workloads [--repeats 2] [--sessions 8] [--turns 6]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchmarks.adaptive_vs_grid import measure
from benchmarks.report import machine_note, mid, print_table, ratio
from tui_lab.engine.settings.run_settings import RunSettings

BALANCES = ("round_robin", "session")
FIGURES = (
    ("cache_hit_rate", "cache hit rate", "{:.2f}"),
    ("prefill_tok_per_s", "prefill tok/s", "{:,.0f}"),
    ("output_tok_per_s", "output tok/s", "{:,.1f}"),
    ("ttft_ms_p50", "TTFT p50 ms", "{:,.0f}"),
    ("ttft_ms_p99", "TTFT p99 ms", "{:,.0f}"),
)


def _figure(row: Mapping[str, object], name: str) -> float | None:
    value = row.get(name)
    ok = not row["error"] and row["requests_failed"] == 0
    return float(value) if ok and isinstance(value, int | float) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="measurements per balancer")
    parser.add_argument("--sessions", default="8")
    parser.add_argument("--turns", default="6")
    parser.add_argument("--system-tokens", default="512")
    parser.add_argument("--prompt-tokens", default="32", help="each user message")
    parser.add_argument("--n-predict", default="32")
    parser.add_argument("--parallel", default="8")
    parser.add_argument("--base-port", default="8100")
    parser.add_argument("--nginx-port", default="8000")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="workloads-"))
    base = RunSettings(
        kind="sweep-full",
        instances="2",
        parallel=args.parallel,
        concurrency=args.sessions,  # one client per conversation
        n_predict=args.n_predict,
        workload="multi-turn",
        sessions=args.sessions,
        turns=args.turns,
        system_tokens=args.system_tokens,
        prompt_tokens=args.prompt_tokens,
        cache_prompt=True,
        stream=True,
        base_port=args.base_port,
        nginx_port=args.nginx_port,
    )
    figures: dict[tuple[str, str], list[float | None]] = {}
    for _ in range(args.repeats):
        for balance in BALANCES:
            outcome, _, _ = measure(base.with_values(balance=balance), results)
            for row in outcome.rows:
                for name, _, _ in FIGURES:
                    figures.setdefault((balance, name), []).append(_figure(row, name))
    rows = []
    for name, label, form in FIGURES:
        rr, session = (mid(figures.get((b, name), [])) for b in BALANCES)
        shown = ["n/a" if v is None else form.format(v) for v in (rr, session)]
        rows.append((label, *shown, ratio(session, rr)))
    print_table(
        f"Session affinity against round robin: {args.sessions} conversations x {args.turns} "
        f"turns, {args.system_tokens}-token system prompt, {args.prompt_tokens}-token user "
        f"messages, 2 instances x {args.parallel} slots, n_predict {args.n_predict}, streamed, "
        f"cache on (medians of {args.repeats})",
        ("figure", "round_robin", "session", "session / round_robin"),
        rows,
        [
            "reference (issue 12): one conversation per instance 0.93-0.95 cache hit rate, "
            "nginx round robin 0.62-0.74",
            f"results in {results}",
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
