"""Benchmark 3: a second instance on a CPU box, with the cores split and without.

The default sweep's 1x1 and 2x1 cells at concurrency 8 (n_predict 64), under the four
combinations of `--threads default|auto` and `--placement shared|pinned`, one sweep per threads
choice, in the same run. With llama-server's own thread count each of two instances runs one
thread per core of the machine, and the two fight for the cores; `auto` gives each its share.
The figure that matters is the 2x1 / 1x1 ratio within one variant (target >= 0.8 with auto).

    python -m benchmarks.placement [--repeats 1] [--n-predict 64]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchmarks.adaptive_vs_grid import measure
from benchmarks.report import machine_note, mid, print_table, ratio
from tui_lab.engine.processes.placement import machine_topology
from tui_lab.engine.settings.run_settings import RunSettings

TARGET = 0.8
THREADS = ("default", "auto")
PLACEMENTS = ("shared", "pinned")


def _tok(row: Mapping[str, object]) -> float | None:
    ok = not row["error"] and row["requests_failed"] == 0
    return float(row["output_tok_per_s"]) if ok else None  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="sweeps per threads choice")
    parser.add_argument("--n-predict", default="64")
    parser.add_argument("--concurrency", default="8")
    parser.add_argument("--base-port", default="8100")
    parser.add_argument("--nginx-port", default="8000")
    args = parser.parse_args()
    results = Path(tempfile.mkdtemp(prefix="placement-"))
    base = RunSettings(
        kind="sweep-full",
        instances="1,2",
        parallel="1",
        concurrency=args.concurrency,
        n_predict=args.n_predict,
        placement=",".join(PLACEMENTS),
        base_port=args.base_port,
        nginx_port=args.nginx_port,
    )
    figures: dict[tuple[str, str, int], list[float | None]] = {}
    got: dict[tuple[str, str, int], str | None] = {}
    for _ in range(args.repeats):
        for threads in THREADS:  # interleaved, so drift over the run spreads over both
            outcome, _, _ = measure(base.with_values(threads=threads), results)
            for row in outcome.rows:
                key = (threads, str(row["placement"]), int(row["instances"]))  # type: ignore[call-overload]
                figures.setdefault(key, []).append(_tok(row))
                got[key] = (
                    f"{row['instance_threads'] or 'default'} / {row['instance_cpus'] or 'all'}"
                )
    rows = []
    for threads in THREADS:
        for where in PLACEMENTS:
            one, two = (mid(figures.get((threads, where, n), [])) for n in (1, 2))
            rows.append(
                (
                    f"--threads {threads} --placement {where}",
                    "n/a" if one is None else f"{one:.1f}",
                    "n/a" if two is None else f"{two:.1f}",
                    ratio(two, one),
                    got.get((threads, where, 2)) or "n/a",
                )
            )
    cores = machine_topology().cores
    print_table(
        f"A second instance: 1x1 vs 2x1 at concurrency {args.concurrency}, n_predict "
        f"{args.n_predict}, default model, {len(cores)} physical cores "
        f"(medians of {args.repeats})",
        ("variant", "1x1 tok/s", "2x1 tok/s", "2x1 / 1x1", "2x1: threads / cpus each"),
        rows,
        [
            f"target: 2x1 / 1x1 >= {TARGET} with --threads auto (issue 10)",
            f"results in {results}",
            machine_note(),
        ],
    )


if __name__ == "__main__":
    main()
