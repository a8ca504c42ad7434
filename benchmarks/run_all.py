"""`./lab bench`: every benchmark of issue 6, one after another, each printing its own table.

Each runs in its own process (they pin cores and start servers of their own), its progress on
stderr as it goes; the tables are printed again together at the end, so one screen holds the
run's figures. `./lab bench load_client tui_cost` runs only those.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheapest first.
ORDER = (
    "load_client",
    "tui_cost",
    "telemetry_cost",
    "placement",
    "engine_limit",
    "adaptive_vs_grid",
    "workloads",
    "open_loop",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {' '.join(ORDER)}")
    args = parser.parse_args()
    if unknown := sorted(set(args.names) - set(ORDER)):
        parser.error(f"unknown benchmark {', '.join(unknown)}")
    tables: list[str] = []
    failed = []
    for name in args.names or ORDER:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}"],
            cwd=HERE.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        print(proc.stdout, end="", flush=True)
        took = time.monotonic() - start
        if proc.returncode:
            failed.append(name)
            tables.append(f"\n{name}: FAILED (exit {proc.returncode}) after {took:.0f} s")
        else:
            tables.append(proc.stdout.rstrip() + f"\n  ({name}: {took:.0f} s)")
    print("\n==== all benchmarks ====" + "".join(tables))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
