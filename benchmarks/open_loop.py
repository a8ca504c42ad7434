"""Benchmark 8: open-loop arrivals below and above capacity, and exact prompt lengths.

First a closed-loop cell finds what one server of 2 slots behind nginx serves (requests/s at
concurrency 16); then Poisson arrivals at 0.3 and 0.6 of that and at twice that, on the same
servers, capped at 16 in flight. Below capacity the achieved rate should follow the offered one
(issue 12: within 5 %); above it the excess must show as queueing, in the client (arrivals held
back by the cap) and at the server (requests deferred behind its slots), not as a quietly lower
rate.
Then a synthetic workload at two prompt lengths: the prompt tokens the server counted against
those asked (issue 12: within 1 %; the server's count includes its BOS token).

    python -m benchmarks.open_loop [--requests 60] [--n-predict 16]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchmarks.adaptive_vs_grid import measure
from benchmarks.report import machine_note, print_table, ratio
from tui_lab.engine.settings.run_settings import RunSettings

# Rates as fractions of the closed-loop capacity: two below it, one above.
FRACTIONS = (0.3, 0.6, 2.0)
LENGTHS = (200, 1500)


def _num(row: Mapping[str, object], name: str) -> float | None:
    value = row.get(name)
    return float(value) if isinstance(value, int | float) else None


def _shown(value: float | None, form: str = "{:.2f}") -> str:
    return "n/a" if value is None else form.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", default="60", help="per open-loop cell")
    parser.add_argument("--n-predict", default="16")
    parser.add_argument("--base-port", default="8100")
    parser.add_argument("--nginx-port", default="8000")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="open-loop-"))
    base = RunSettings(
        kind="sweep-round-robin",
        instances="1",
        parallel="2",
        n_predict=args.n_predict,
        base_port=args.base_port,
        nginx_port=args.nginx_port,
    )
    closed, _, _ = measure(base.with_values(concurrency="16", requests="32"), results)
    capacity = _num(closed.rows[0], "requests_per_s")
    if capacity is None:
        raise SystemExit(f"the closed-loop cell failed: {closed.rows[0]['error']}")
    rates = ",".join(f"{capacity * f:.2f}" for f in FRACTIONS)
    opened, _, _ = measure(
        base.with_values(concurrency="16", rate=rates, requests=args.requests, arrival="poisson"),
        results,
    )
    rows = [
        (
            "closed loop, c=16 (capacity)",
            "-",
            _shown(capacity),
            "-",
            "-",
            _shown(_num(closed.rows[0], "deferred_max"), "{:.0f}"),
            _shown(_num(closed.rows[0], "e2el_ms_p50"), "{:,.0f}"),
        )
    ]
    for fraction, row in zip(FRACTIONS, opened.rows, strict=True):
        offered, achieved = _num(row, "offered_rate"), _num(row, "achieved_rate")
        rows.append(
            (
                f"Poisson {row['rate']}/s ({fraction:g} x capacity)",
                _shown(offered),
                _shown(achieved),
                ratio(achieved, offered),
                _shown(_num(row, "client_queue_max"), "{:.0f}"),
                _shown(_num(row, "deferred_max"), "{:.0f}"),
                _shown(_num(row, "e2el_ms_p50"), "{:,.0f}"),
            )
        )
    print_table(
        f"Open loop: 1 instance x 2 slots behind nginx, n_predict {args.n_predict}, "
        f"{args.requests} requests a rate, at most 16 in flight",
        (
            "cell",
            "offered/s",
            "achieved/s",
            "achieved/offered",
            "client queue max",
            "deferred max",
            "e2el p50 ms",
        ),
        rows,
        [
            "target (issue 12): below capacity achieved within 5 % of offered (0.95-1.05); "
            "above it the queueing shown",
            f"results in {results}",
            machine_note(),
        ],
    )
    lengths = []
    for tokens in LENGTHS:
        synthetic = RunSettings(
            kind="test-concurrent",
            parallel="2",
            concurrency="2",
            requests="6",
            n_predict="4",
            workload="synthetic",
            prompt_tokens=str(tokens),
            base_port=args.base_port,
            nginx_port=args.nginx_port,
        )
        outcome, _, _ = measure(synthetic, results)
        row = outcome.rows[0]
        asked = 6 * tokens
        counted = _num(row, "prompt_tokens")
        shown = _shown(counted, "{:,.0f}")
        lengths.append((f"{tokens} tokens x 6", f"{asked:,}", shown, ratio(counted, asked)))
    print_table(
        "Exact lengths: a synthetic workload's prompt tokens, asked and as the server counted them",
        ("prompt", "asked", "server counted", "counted / asked"),
        lengths,
        ["target (issue 12): within 1 % (0.99-1.01); the count includes one BOS a request"],
    )


if __name__ == "__main__":
    main()
